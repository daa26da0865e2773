"""The model downloader behind `inferkube-runtime download` (hf://, https:// archives, pvc://).

Public interface: `cli.main(argv) -> int` for the command line, `download(DownloadRequest)` for Python
callers, and the progress contract names in `progress` (read by the operator).
"""

from __future__ import annotations

from inferkube.runtime.download.core import DownloadRequest, DownloadResult, download
from inferkube.runtime.download.errors import DownloadError

__all__ = ["DownloadError", "DownloadRequest", "DownloadResult", "download"]
