"""inferkube runtime: an OpenAI-compatible FastAPI server on the vLLM engine, with tenancy and drain."""
