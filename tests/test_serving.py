"""The process-wide model-work pool: shared computation, cross-session cache, memory bound, abandoned jobs."""

import threading

import numpy as np
import torch

from core.service.pool import ModelWorkPool, result_bytes


def test_identical_requests_share_one_computation_and_then_the_cache():
    pool = ModelWorkPool(workers=2, threads_per_worker=torch.get_num_threads())
    gate, calls = threading.Event(), []

    def work(x):
        gate.wait(5)
        calls.append(x)
        return x * 2

    first, second = pool.submit("k", work, 21), pool.submit("k", work, 21)
    assert first is second  # the second session waits on the same job
    gate.set()
    assert first.result(5) == second.result(5) == 42
    assert pool.submit("k", work, 21).result(5) == 42  # later: served from the cache
    assert calls == [21] and pool.stats()["hits"] == 1 and pool.stats()["computed"] == 1


def test_a_job_nobody_waits_for_is_not_computed():
    pool = ModelWorkPool(workers=1, threads_per_worker=torch.get_num_threads())
    gate, calls = threading.Event(), []
    busy = pool.submit("busy", lambda: gate.wait(5))
    pool.submit("abandoned", calls.append, "abandoned")  # queued behind the busy worker
    shared = pool.submit("shared", calls.append, "shared")
    pool.submit("shared", calls.append, "shared")
    pool.release("abandoned")  # its only session went away
    pool.release("shared")  # one of two sessions went away: still computed for the other
    gate.set()
    busy.result(5)
    shared.result(5)
    assert calls == ["shared"] and pool.stats()["cancelled"] == 1


def test_cache_is_bounded_by_bytes():
    pool = ModelWorkPool(workers=1, cache_bytes=3 * 2**20, threads_per_worker=torch.get_num_threads())
    for i in range(10):
        pool.submit(i, np.zeros, 2**20 // 8).result(5)  # 1 MB arrays
    stats = pool.stats()
    assert stats["cached_bytes"] <= 3 * 2**20 and stats["cached"] == 2
    assert pool.submit(9, np.ones, 1).result(5).nbytes == 2**20  # the most recent stays cached
    assert result_bytes(np.zeros(10)) == 1024 + 80


def test_predictions_jump_the_queue_of_explanations():
    pool = ModelWorkPool(workers=1, threads_per_worker=torch.get_num_threads())
    gate, order = threading.Event(), []
    busy = pool.submit("busy", lambda: gate.wait(5))
    queued = [pool.submit(name, order.append, name) for name in ("explain-1", "explain-2")]
    queued.append(pool.submit("predict", order.append, "predict", priority=0))  # arrives last
    gate.set()
    busy.result(5)
    for future in queued:
        future.result(5)
    assert order == ["predict", "explain-1", "explain-2"]


RERUN_SCRIPT = '''
import threading
import time

import streamlit as st

import pages.common as common
from core.service.pool import ModelWorkPool


@st.cache_resource
def shared():
    return ModelWorkPool(workers=1, threads_per_worker=1), threading.Event()


pool, gate = shared()
common.work_pool = lambda: pool  # the page helper below waits on this one-worker pool
st.text(f"cancelled {pool.stats()['cancelled']} computed {pool.stats()['computed']}")
if "started" not in st.session_state:
    st.session_state["started"] = True
    pool.submit("busy", gate.wait, 60)  # the only worker is busy: the next job stays queued
    common.await_result(("queued",), pool.submit(("queued",), lambda: "computed"))
    st.text("never shown: the rerun interrupted the wait")
else:  # with fast reruns (the default) this run starts at once; the old run stops at its next heartbeat
    deadline = time.time() + 10
    while pool.stats()["cancelled"] == 0 and time.time() < deadline:
        time.sleep(0.05)
    st.text(f"after the rerun: cancelled {pool.stats()['cancelled']} computed {pool.stats()['computed']}")
    gate.set()
'''


def test_a_rerun_in_a_real_server_cancels_the_job_its_page_was_waiting_for(tmp_path):
    """Streamlit stops a run at the page's next st.* call, never inside a blocking wait: the page helper's
    heartbeat is that call, so a real server's rerun releases (cancels) the queued job the old run was waiting
    for. With fast reruns the new run starts before the old one has stopped, so the new run waits to see it."""
    import asyncio

    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    from tests.conftest import streamlit_server
    from tests.streamlit_client import StreamlitSession

    script = tmp_path / "rerun_app.py"
    script.write_text(RERUN_SCRIPT)
    with streamlit_server(script) as url:
        async def texts_until(session, done):
            seen = []
            async with asyncio.timeout(60):
                while True:
                    msg = ForwardMsg.FromString(await session.ws.recv())
                    if msg.WhichOneof("type") == "delta" and msg.delta.new_element.WhichOneof("type") == "text":
                        seen.append(msg.delta.new_element.text.body)
                    if done(msg, seen):
                        return seen

        async def talk():
            async with StreamlitSession(url) as session:
                await session.send(rerun_script=ClientState())
                first = await texts_until(session, lambda m, seen: bool(seen))  # the run is now waiting
                await asyncio.sleep(1.0)
                await session.send(rerun_script=ClientState())
                second = await texts_until(session, lambda m, seen: m.WhichOneof("type") == "script_finished"
                                           and any(t.startswith("after the rerun") for t in seen))
                return first, second

        first, second = asyncio.run(talk())
    assert first == ["cancelled 0 computed 0"]
    assert "after the rerun: cancelled 1 computed 0" in second and not any("never shown" in t for t in second), second
