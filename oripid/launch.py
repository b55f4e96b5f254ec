"""Run an oripid command in several processes through `accelerate launch`."""

from __future__ import annotations

import socket
import subprocess
import sys

import torch

from oripid.errors import OripidError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_command(args: list[str], processes: int) -> list[str]:
    """`accelerate launch -m oripid ARGS` with `processes` processes.

    Without a GPU, `--cpu --num_processes N` would start a single process; `--multi_gpu` starts N,
    and oripid's state then asks for CPU (gloo) itself.
    """
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]
    if processes > 1:
        command.append("--multi_gpu")
    return command + ["-m", "oripid", *args]


def run_launched(args: list[str], processes: int) -> None:
    if processes < 1:
        raise OripidError(f"processes must be at least 1, not {processes}")
    if torch.cuda.is_available() and torch.cuda.device_count() < processes:
        print(f"oripid: {torch.cuda.device_count()} GPU(s) for {processes} processes; running one process")
        processes = 1
    if processes == 1:
        command = [sys.executable, "-m", "oripid", *args]
    else:
        command = accelerate_command(args, processes)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise OripidError(
            f"`{' '.join(command[1:])}` failed with exit code {result.returncode}; see its log above"
        )
