"""QuotaBook: quota/namespace events mark decisions dirty, passes report exactly the services whose decision changed."""

from __future__ import annotations

from typing import Any

from inferkube.operator.quota import ADMITTED, REFUSED
from inferkube.operator.quotabook import QuotaBook

Key = tuple[str, str]


def service(name: str, rv: int = 1, age: int = 0, gpus: int = 1, ns: str = "search") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "uid": f"u-{name}",
                         "creationTimestamp": f"2026-01-01T00:00:{age:02d}Z"},
            "spec": {"model": {"source": "hf://o/m"}, "resources": {"accelerator": "nvidia-l4", "gpus": gpus}}}


def quota(name: str = "team", gpus: int = 2, **selector: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 1}, "spec": {"selector": selector, "limits": {"gpus": gpus}}}


def test_no_quota_costs_nothing_and_decides_nothing() -> None:
    book = QuotaBook()
    svcs = {("search", "a"): service("a")}
    assert not book.active and not book.pending(("search", "a"), svcs[("search", "a")], 0)
    assert book.recompute(svcs, lambda _: 0) == set() and book.decision(("search", "a")) is None


def test_a_quota_makes_selected_services_pending_until_a_pass() -> None:
    book = QuotaBook()
    assert book.observe_quota("ADDED", quota(namespaces=["search"]))
    svcs = {("search", "a"): service("a"), ("other", "b"): service("b", ns="other")}
    assert book.pending(("search", "a"), svcs[("search", "a")], 0)
    assert not book.pending(("other", "b"), svcs[("other", "b")], 0), "not selected: no need to wait"
    assert book.recompute(svcs, lambda _: 0) == {("search", "a")}
    assert not book.pending(("search", "a"), svcs[("search", "a")], 0)
    decision = book.decision(("search", "a"))
    assert decision is not None and decision.reason == ADMITTED


def test_only_changed_decisions_are_reported() -> None:
    book = QuotaBook()
    book.observe_quota("ADDED", quota(gpus=2))
    svcs = {(("search", n)): service(n, age=i) for i, n in enumerate("abc")}
    assert book.recompute(svcs, lambda _: 0) == {("search", "a"), ("search", "b"), ("search", "c")}
    assert book.decision(("search", "c")).reason == REFUSED
    assert book.recompute(svcs, lambda _: 0) == set(), "same world, no change"
    del svcs[("search", "a")]
    assert book.recompute(svcs, lambda _: 0) == {("search", "a"), ("search", "c")}
    assert book.decision(("search", "c")).reason == ADMITTED


def test_status_only_quota_events_do_not_dirty_the_book() -> None:
    book = QuotaBook()
    body = quota()
    assert book.observe_quota("ADDED", body)
    book.recompute({}, lambda _: 0)
    assert not book.observe_quota("MODIFIED", {**body, "status": {"used": {"gpus": 1}}})
    assert not book.dirty and book.statuses["team"] == {"used": {"gpus": 1}}
    assert book.observe_quota("MODIFIED", quota(gpus=5)) and book.dirty
    assert book.observe_quota("DELETED", quota()) and not book.active


def test_namespace_labels_matter_only_to_namespace_selectors() -> None:
    book = QuotaBook()
    book.observe_quota("ADDED", quota(gpus=9))
    book.recompute({}, lambda _: 0)
    assert not book.observe_namespace("ADDED", {"metadata": {"name": "search", "labels": {"team": "s"}}})
    book.observe_quota("ADDED", quota("ns-sel", namespaceSelector={"matchLabels": {"team": "s"}}))
    svcs = {("search", "a"): service("a")}
    book.recompute(svcs, lambda _: 0)
    assert book.decision(("search", "a")).quotas == ("ns-sel", "team")
    assert book.observe_namespace("MODIFIED", {"metadata": {"name": "search", "labels": {"team": "t"}}})
    assert book.recompute(svcs, lambda _: 0) == {("search", "a")}
    assert book.decision(("search", "a")).quotas == ("team",)


def test_an_older_copy_of_a_quota_does_not_replace_a_newer_status() -> None:
    book = QuotaBook()
    newer = {**quota(), "metadata": {"name": "team", "resourceVersion": "9"}, "status": {"serviceCount": 2}}
    older = {**quota(), "metadata": {"name": "team", "resourceVersion": "7"}, "status": {"serviceCount": 1}}
    book.observe_quota("MODIFIED", newer)
    assert not book.observe_quota("MODIFIED", older)
    assert book.statuses["team"] == {"serviceCount": 2}


def test_an_invalid_quota_is_remembered_and_ignored() -> None:
    book = QuotaBook()
    book.observe_quota("ADDED", {"metadata": {"name": "bad"}, "spec": {"limits": {"gpus": "many"}}})
    assert not book.active and "spec.limits.gpus" in book.invalid["bad"]


def test_running_replicas_feed_the_decision() -> None:
    book = QuotaBook()
    book.observe_quota("ADDED", quota(gpus=1))
    svcs = {("search", "old"): service("old", age=1), ("search", "new"): service("new", age=2)}
    book.recompute(svcs, lambda k: 1 if k == ("search", "new") else 0)
    assert book.decision(("search", "new")).reason == ADMITTED, "what runs stays"
    assert book.decision(("search", "old")).reason == REFUSED
