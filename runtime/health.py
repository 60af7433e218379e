"""Hardware and health figures of the gateway process, for the stats message and Prometheus.

An operator sizing a gateway needs what it costs, not only what it does: CPU time and share
since the previous stats message (`os.times`, the process's own user + system time), resident
memory (/proc/self/statm; the peak from `resource.getrusage` where /proc is missing), the
serving backend and artifact, and the GPU memory this process holds where a GPU backend runs.
Open windows and the outbox depth are the stats' `open_windows` and `outbox_unacked` gauges
already; they are not repeated here.

GPU memory comes from `nvidia-smi --query-compute-apps` (this process's row), never from
importing TensorRT, pycuda or the CUDA runtime: those may be absent and must not load on a CPU
gateway. It is null on the CPU backend, where nvidia-smi is missing (a Jetson, whose memory is
shared and counted in RSS), or where it does not list this process (another PID namespace);
after the first failure it is not asked again. In Prometheus, CPU and RSS are prometheus-
client's process collector's (`process_cpu_seconds_total`, `process_resident_memory_bytes`);
this module adds `edgelstm_backend_info{backend, artifact, model}` (value 1) and, where known,
`edgelstm_gpu_memory_bytes`.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from runtime.model import LoadedModel
from runtime.stats import Stats

log = logging.getLogger(__name__)

CPU_BACKENDS = ("onnxruntime",)
NVIDIA_SMI_TIMEOUT_S = 1.0  # runs on the processing loop once per stats interval
MIB = 1 << 20


def rss_bytes() -> int:
    """Resident memory now (/proc/self/statm), or the peak where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    times = os.times()
    return times.user + times.system


class GpuMemory:
    """This process's GPU memory in bytes from nvidia-smi; None when it cannot tell."""

    def __init__(self) -> None:
        self.command = shutil.which("nvidia-smi")

    def bytes(self) -> int | None:
        if self.command is None:
            return None
        query = [
            self.command,
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ]
        try:
            out = subprocess.run(
                query, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("gpu_memory_bytes left null: nvidia-smi failed (%s)", exc)
            self.command = None
            return None
        pid = str(os.getpid())
        used = [
            line.split(",")[1] for line in out.splitlines() if line.split(",")[0].strip() == pid
        ]
        if not used:
            return None
        return sum(int(float(u)) for u in used) * MIB


class Health:
    """The `health` section of the stats message; also sets the Prometheus-only gauges."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.gpu = GpuMemory()
        self._last = (time.monotonic(), cpu_seconds())

    def snapshot(self, model: LoadedModel) -> dict[str, Any]:
        backend, artifact = model.backend_name, model.artifact
        name = f"{model.manifest.model_name} {model.manifest.model_version}"
        now, cpu = time.monotonic(), cpu_seconds()
        elapsed = max(now - self._last[0], 1e-9)
        share = (cpu - self._last[1]) / elapsed
        self._last = (now, cpu)
        gpu = None if backend in CPU_BACKENDS else self.gpu.bytes()
        self.stats.labelled_gauge(
            "backend_info",
            "the serving backend and artifact (value 1)",
            ("backend", "artifact", "model"),
            [((backend, artifact, name), 1.0)],
        )
        if gpu is not None:
            self.stats.labelled_gauge(
                "gpu_memory_bytes", "GPU memory of this process", (), [((), gpu)]
            )
        return {
            "cpu_seconds": round(cpu, 3),
            "cpu_percent": round(100.0 * share, 1),  # of one core, since the last stats message
            "rss_bytes": rss_bytes(),
            "threads": threading.active_count(),
            "backend": backend,
            "artifact": artifact,
            "gpu_memory_bytes": gpu,
        }
