"""The `hakobu` command: what shared memory hakobu uses, who holds it, and cleaning up.

    hakobu ls [--all]              the named objects of a domain (queues, stores, sync objects,
                                   topics): their state, memory, who has them open
    hakobu info NAME               everything about one of them (a topic: its subscribers' lag and drops)
    hakobu rm NAME [NAME...]       remove them, whoever created them
    hakobu rm --everything         remove every file of a domain, also a damaged one
    hakobu gc                      reclaim what dead processes held
    hakobu doctor                  check the system settings that matter for shared memory
    hakobu top [--interval S]      a live view: queues, topics, stores and pipeline stages with
               [--once]            their rates, depth, bytes in flight; --json/--once: one frame
    hakobu bridge NAME --to URL    carry a queue (or --topic) to another host over ZeroMQ;
                   --at URL        receive one there (`hakobu bridge keys DIR`: CurveZMQ keys)
    hakobu bench [--quick]         IPC methods side by side with hakobu (the hakobu-bench package)

Every subcommand takes ``--domain D`` (default: $HAKOBU_DOMAIN, else u<uid>)
and ``--json`` (machine-readable output on stdout). Errors go to stderr with
what to do, and the exit code is 1.

How it looks: files are found by name in /dev/shm (and on hugetlbfs mounts),
and the processes that have them open by reading /proc/*/maps; nothing is
opened for that. Figures kept inside shared memory (queue counters, heap use,
the process table) need attaching to the domain. The command checks that the
domain's files exist first, because attaching creates a domain that has none,
and holds one attachment for the whole command. Note that attaching also
reclaims what dead processes held (the library does that on every attach).
What is which file of which domain is the core's knowledge (`_core.domain_files`
and friends); this package asks for it rather than parsing names itself.

One module per concern: ``files`` (a domain's files), ``processes`` (who maps
them), ``reports`` (what is shown, as data), ``output`` (tables and JSON),
``commands`` (ls, info, rm, gc), ``doctor``, ``top`` (the live view: two
samples make a frame), ``bridge`` (hakobu.Bridge on the command line), ``errors`` (how a command fails), ``plugins``
(subcommands of other distributions, such as ``hakobu bench``), ``parser``
(the command line, `main`).
"""

from __future__ import annotations

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
