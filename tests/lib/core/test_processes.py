import sys

import pytest

from gsv_pipelines.lib.core.processes import ManagedProcess, ServiceError, free_port, port_open


def test_a_process_that_dies_while_starting_fails_with_its_log(tmp_path):
    process = ManagedProcess(
        "broken", [sys.executable, "-c", "print('bad config'); raise SystemExit(3)"],
        tmp_path / "broken.log",
    ).start()  # fmt: skip
    with pytest.raises(ServiceError, match=r"broken exited with code 3:\nbad config"):
        process.wait_ready(lambda: False)


def test_stop_ends_the_whole_process_group(tmp_path):
    port = free_port()
    server = (
        "import socket,time; s=socket.socket(); "
        f"s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(60)"
    )
    # The server runs as a grandchild: stop must reach it through the process group.
    parent = f"import subprocess,sys; subprocess.Popen([sys.executable,'-c',{server!r}]).wait()"
    with ManagedProcess("tree", [sys.executable, "-c", parent], tmp_path / "tree.log") as process:
        process.wait_ready(lambda: port_open(port))
    assert process.proc.returncode is not None
    assert not port_open(port)


def test_a_missing_binary_is_a_service_error(tmp_path):
    with pytest.raises(ServiceError, match="cannot run /nonexistent/bin"):
        ManagedProcess("ghost", ["/nonexistent/bin"], tmp_path / "ghost.log").start()
