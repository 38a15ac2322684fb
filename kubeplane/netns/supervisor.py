"""The lab's one workload process: `python -m kubeplane.netns.supervisor --lab LAB`.

It reads /run/kubeplane/<lab>/workloads.json, serves them all with a WorkloadEngine, writes readiness.json on
every change (with the workloads generation it serves), re-reads workloads.json on SIGHUP, and on
SIGTERM/SIGINT stops its command workloads and exits. `lab down` recognises it by its
command line (module name and lab) before signalling the pid recorded in state.json.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from kubeplane.netns.state import Readiness, StateStore
from kubeplane.netns.workloads import WorkloadEngine

MODULE = "kubeplane.netns.supervisor"

log = logging.getLogger(MODULE)


def supervisor_argv(python: str, lab: str) -> list[str]:
    return [python, "-m", MODULE, "--lab", lab]


def is_supervisor_cmdline(cmdline: Sequence[str], lab: str) -> bool:
    """True when `cmdline` is this module serving `lab` (the check before any signal is sent)."""
    return MODULE in cmdline and "--lab" in cmdline and cmdline[cmdline.index("--lab") + 1 :][:1] == (lab,)


async def serve(lab: str) -> None:
    store = StateStore(lab)
    served = 0  # the generation fully started; readiness only claims it once `update` has returned

    def report(engine: WorkloadEngine) -> None:
        store.save_readiness(Readiness(engine.ready_pods, engine.commands, served))

    engine = WorkloadEngine(on_change=report, log_dir=store.directory / "pods")
    stopping = asyncio.Event()
    reload = asyncio.Event()
    reload.set()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    stop_waiter = loop.create_task(stopping.wait())
    while not stopping.is_set():
        reload_waiter = loop.create_task(reload.wait())
        await asyncio.wait({stop_waiter, reload_waiter}, return_when=asyncio.FIRST_COMPLETED)
        reload_waiter.cancel()
        if reload.is_set() and not stopping.is_set():
            reload.clear()
            workload_set = store.load_workloads()
            await engine.update(workload_set.workloads)
            served = workload_set.generation
            report(engine)
            log.info(
                "supervisor serving lab=%s generation=%d workloads=%d ready=%d",
                lab,
                served,
                len(workload_set.workloads),
                len(engine.ready_pods),
            )
    await engine.stop()
    log.info("supervisor stopped lab=%s", lab)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=MODULE, description="Serve a kubeplane lab's pod workloads.")
    parser.add_argument("--lab", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.lab))


if __name__ == "__main__":
    main()
