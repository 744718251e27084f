"""What the command reports of domains, queues, stores, sync objects and topics, as data (rendered by `output`, or printed as JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import _core
from .._errors import Corrupt, HakobuError, NotFound
from .._processes import process_exists
from .files import domain_files
from .processes import ProcessScan


def _queue_files_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """What is known of a queue without attaching to it: its file and who maps it."""
    return {
        "name": name,
        "domain": domain,
        "path": str(path),
        "size": None,
        "capacity": None,
        "put_count": None,
        "get_count": None,
        "bytes": None,  # payload bytes waiting
        "max_bytes": None,  # the byte capacity (0: none)
        "senders": None,
        "ended": None,
        "senders_lost": None,
        "receivers_waiting": None,  # threads or event loops waiting to get
        "senders_waiting": None,  # waiting for room
        "creator_pid": None,
        "creator_alive": None,
        "file_bytes": None,
        "memory_bytes": None,
        "pids": scan.pids_mapping([path]),
        "error": None,
    }


# What a queue report holds of its stream and byte capacity (QueueStats), besides its counts.
_STREAM_FIELDS = (
    "bytes",
    "max_bytes",
    "senders",
    "ended",
    "senders_lost",
    "receivers_waiting",
    "senders_waiting",
)


def queue_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """Everything about one queue; `error` says why the counters are missing, if they are."""
    report = _queue_files_report(name, domain, path, scan)
    try:
        status = path.stat()
        report["file_bytes"] = status.st_size
        report["memory_bytes"] = status.st_blocks * 512
        info = _core.queue_info(name, domain)
    except FileNotFoundError:
        report["error"] = f"queue '{name}' was removed meanwhile"
        return report
    except HakobuError as error:  # damaged, incompatible, another user's...
        report["error"] = str(error)
        return report
    for key in ("size", "capacity", "put_count", "get_count", "creator_pid", *_STREAM_FIELDS):
        report[key] = info[key]
    report["creator_alive"] = process_exists(info["creator_pid"])
    return report


def _object_files_report(name: str, domain: str, kind: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """What is known of a store, sync object or topic without reading it: its file and who maps it."""
    report: dict[str, Any] = {
        "name": name,
        "domain": domain,
        "kind": kind,
        "path": str(path),
        "pids": scan.pids_mapping([path]),
        "file_bytes": None,
        "memory_bytes": None,
        "creator_pid": None,
        "creator_alive": None,
        "error": None,
    }
    try:
        status = path.stat()
    except FileNotFoundError:
        report["error"] = f"{kind} '{name}' was removed meanwhile"
        return report
    report["file_bytes"] = status.st_size
    report["memory_bytes"] = status.st_blocks * 512
    return report


def store_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """Everything about one store: its keys with version, size, kind and readers (references held
    on the value besides the store's own); `error` says why they are missing, if they are."""
    report = _object_files_report(name, domain, "store", path, scan)
    report.update(capacity=None, unlinked=None, value_bytes=None, keys=[])
    if report["error"]:
        return report
    try:
        info = _core.store_info(name, domain)
    except NotFound:
        report["error"] = f"store '{name}' was removed meanwhile"
        return report
    except HakobuError as error:  # damaged, incompatible, another user's...
        report["error"] = str(error)
        return report
    for key in ("capacity", "creator_pid", "unlinked", "value_bytes", "keys"):
        report[key] = info[key]
    report["creator_alive"] = process_exists(info["creator_pid"])
    return report


def sync_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """Everything about one sync object: its kind ("lock", "event", "semaphore"...; "sync" while
    unknown) and state (a lock's holder, waiters and owner deaths; an event's flag; a semaphore's
    value and counts held per process; a barrier's parties; an array's dtype and shape...)."""
    report = _object_files_report(name, domain, "sync", path, scan)
    report.update(waiters=None, held=None, holder_pid=None, holder_alive=None, owner_deaths=None, set=None)
    if report["error"]:
        return report
    try:
        info = _core.sync_info(name, domain)
    except NotFound:
        report["error"] = f"sync object '{name}' was removed meanwhile"
        return report
    except HakobuError as error:
        report["error"] = str(error)
        return report
    report.update(info)
    report["creator_alive"] = process_exists(info["creator_pid"])
    return report


# What a topic report holds besides its file's (None while unknown).
_TOPIC_FIELDS = (
    "capacity",
    "history",
    "max_subscribers",
    "inline_capacity",
    "published",
    "unlinked",
    "retained",
    "retained_bytes",
    "tombstones",
    "damaged_slots",
)


def topic_report(name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """Everything about one topic: its settings and counts, the messages its ring holds, and per
    subscription its pid, whether that process lives, its on_full policy, state, lag (messages
    published it has not received), drops and receipts; `error` says why they are missing."""
    report = _object_files_report(name, domain, "topic", path, scan)
    report.update(dict.fromkeys(_TOPIC_FIELDS), subscribers=[])
    if report["error"]:
        return report
    try:
        info = _core.topic_info(name, domain)
    except NotFound:
        report["error"] = f"topic '{name}' was removed meanwhile"
        return report
    except HakobuError as error:  # damaged, incompatible, another user's...
        report["error"] = str(error)
        return report
    for key in (*_TOPIC_FIELDS, "creator_pid", "subscribers"):
        report[key] = info[key]
    report["creator_alive"] = process_exists(info["creator_pid"])
    return report


def object_report(kind: str, name: str, domain: str, path: Path, scan: ProcessScan) -> dict[str, Any]:
    """The report of the named object `name` in namespace `kind` ("queue", "store", "sync" or "topic")."""
    if kind == "queue":
        return {"kind": "queue", **queue_report(name, domain, path, scan)}
    if kind == "store":
        return store_report(name, domain, path, scan)
    if kind == "topic":
        return topic_report(name, domain, path, scan)
    return sync_report(name, domain, path, scan)


def summarize_domain(stats: dict[str, Any]) -> dict[str, Any]:
    """The domain-wide figures, without this command's own attachment."""
    own_pid = os.getpid()
    processes = [dict(p) for p in stats["processes"] if p["pid"] != own_pid]
    keys = (
        "heap_capacity",
        "heap_used",
        "live_bytes",
        "live_blocks",
        "cached_bytes",
        "huge_pages",
        "huge_page_used",
    )
    summary = {key: stats[key] for key in keys}
    summary["processes"] = processes
    summary["processes_alive"] = sum(1 for p in processes if p["alive"])
    summary["processes_dead"] = sum(1 for p in processes if not p["alive"])
    return summary


def domain_report(domain: str, scan: ProcessScan) -> dict[str, Any]:
    """What `hakobu ls` shows of one domain. Attaches only to a domain whose files are all there."""
    files = domain_files(domain)
    report: dict[str, Any] = {
        "domain": domain,
        "exists": files.exists,
        "damaged": files.damaged,
        "files": [str(p) for p in files.all()],
        "memory_bytes": files.memory_bytes(),
        "pids": scan.pids_mapping(files.all()),
        "owner_uid": files.owner_uid(),
        "summary": None,
        "queues": [],
        "stores": [],
        "sync_objects": [],
        "topics": [],
        "error": None,
    }
    if not files.exists:
        return report
    if files.damaged:
        missing = "registry" if files.registry is None else "heap"
        report["error"] = (
            f"domain '{domain}' is damaged (its {missing} file is missing); "
            f"remove it with `hakobu rm --domain {domain} --everything`"
        )
        report["queues"] = [
            {**_queue_files_report(name, domain, path, scan), "error": "the domain is damaged"}
            for name, path in sorted(files.queues.items())
        ]
        report["stores"] = [
            {**_object_files_report(name, domain, "store", path, scan), "error": "the domain is damaged"}
            for name, path in sorted(files.stores.items())
        ]
        report["sync_objects"] = [
            {**_object_files_report(name, domain, "sync", path, scan), "error": "the domain is damaged"}
            for name, path in sorted(files.syncs.items())
        ]
        report["topics"] = [
            {**_object_files_report(name, domain, "topic", path, scan), "error": "the domain is damaged"}
            for name, path in sorted(files.topics.items())
        ]
        return report
    try:
        with _core.DomainAttachment(domain):
            report["summary"] = summarize_domain(_core.domain_stats(domain))
            report["queues"] = [queue_report(n, domain, p, scan) for n, p in sorted(files.queues.items())]
            report["stores"] = [store_report(n, domain, p, scan) for n, p in sorted(files.stores.items())]
            report["sync_objects"] = [sync_report(n, domain, p, scan) for n, p in sorted(files.syncs.items())]
            report["topics"] = [topic_report(n, domain, p, scan) for n, p in sorted(files.topics.items())]
    except Corrupt as error:
        report["error"] = str(error)
        if "--everything" not in report["error"]:  # older libraries suggest `hakobu rm --domain D` alone
            report["error"] += f"; remove the whole domain with `hakobu rm --domain {domain} --everything`"
    except HakobuError as error:
        report["error"] = str(error)
    return report
