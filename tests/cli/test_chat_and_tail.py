"""`tether chat` and `tether tail` against a real server, through real pipes."""

from __future__ import annotations

import json
import subprocess
import time

import httpx

from helpers.server import ServerFactory, tether_command


def run_chat(base_url: str, lines: list[str], timeout: float = 30) -> str:
    proc = subprocess.run(
        [*tether_command(), "chat", "--url", base_url],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_until_answering(base_url: str, timeout: float = 30) -> None:
    """Wait until the server's only session has an assistant message with text."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=5) as c:
        while time.monotonic() < deadline:
            for item in c.get("/v1/sessions").json()["sessions"]:
                messages = c.get(f"/v1/sessions/{item['id']}").json()["messages"]
                if any(m["role"] == "assistant" and m["parts"] for m in messages):
                    return
            time.sleep(0.05)
    raise AssertionError(f"no answer started within {timeout} s")


def test_chat_streams_answers_and_keeps_the_conversation(tether_server: ServerFactory) -> None:
    server = tether_server()
    out = run_chat(server.base_url, ["/count 5 1", "hello there"])
    assert "1 2 3 4 5" in out
    assert "You said: hello there" in out


def test_chat_asks_for_a_tool_calls_result_at_the_prompt(tether_server: ServerFactory) -> None:
    server = tether_server()
    out = run_chat(server.base_url, ['/tool get_time {"tz": "UTC"}', '"noon"'])
    assert 'result of get_time({"tz": "UTC"})> ' in out
    assert "Tool get_time returned: noon" in out


def test_chat_survives_a_server_restart_mid_answer(tether_server: ServerFactory) -> None:
    server = tether_server()
    proc = subprocess.Popen(
        [*tether_command(), "chat", "--url", server.base_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.write("/count 400 10\n")
    proc.stdin.flush()
    wait_until_answering(server.base_url)
    server.kill()
    tether_server(server.data_dir, port=server.port)  # back on the same address
    out, err = proc.communicate("/count 3 1\n", timeout=60)
    assert proc.returncode == 0, err
    # The first answer went on after the restart, to its end: the same run, continued.
    assert "[interrupted]" not in out, out
    assert " 398 399 400\n" in out, out
    assert "assistant> 1 2 3\n" in out  # and the next message is answered


def test_tail_prints_raw_events_with_offsets(tether_server: ServerFactory) -> None:
    server = tether_server()
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        c.post(f"/v1/sessions/{sid}/messages", json={"content": "/count 3 1"})
        proc = subprocess.Popen(
            [*tether_command(), "tail", sid, "--url", server.base_url],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            events = []
            for line in proc.stdout:
                events.append(json.loads(line))
                if events[-1]["type"] == "run-end":
                    break
        finally:
            proc.terminate()
            proc.wait(10)
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert events[0]["type"] == "user-message"
    deltas = "".join(e["delta"] for e in events if e["type"] == "part-delta")
    assert deltas == "1 2 3"
