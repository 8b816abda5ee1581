"""A service whose dependencies hang: breakers cut off by timeouts, a readiness check that never answers."""

import asyncio
import logging
import os
import threading

from fastapi import FastAPI, HTTPException

import qm_otel

app = FastAPI()
qm_otel.setup(app=app)
log = logging.getLogger("app")
RECOVERY_S = float(os.environ.get("TEST_RECOVERY_S", "0.5"))
breakers = {
    "wait_for": qm_otel.CircuitBreaker("hang-wait-for", failure_threshold=3, window_s=10, recovery_s=RECOVERY_S),
    "timeout": qm_otel.CircuitBreaker("hang-timeout", failure_threshold=3, window_s=10, recovery_s=RECOVERY_S),
    "own": qm_otel.CircuitBreaker("hang-own", failure_threshold=3, window_s=10, recovery_s=RECOVERY_S,
                                  call_timeout_s=0.1),
}
never = threading.Event()


def stuck_check() -> bool:
    """A sync readiness check whose dependency never answers."""
    never.wait()
    return True


qm_otel.add_check("stuck", stuck_check, required=False, timeout_s=0.3)


async def hanging_dependency() -> None:
    await asyncio.sleep(3600)


@app.get("/hang/{mode}")
async def hang(mode: str) -> dict[str, str]:
    breaker = breakers[mode]

    async def call() -> None:
        async with breaker:
            await hanging_dependency()

    try:
        if mode == "wait_for":
            await asyncio.wait_for(call(), 0.1)
        elif mode == "timeout":
            async with asyncio.timeout(0.1):
                await call()
        else:
            await call()  # the breaker's own call_timeout_s
    except qm_otel.CircuitOpenError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    except TimeoutError as exc:
        raise HTTPException(status_code=504, detail="dependency timed out") from exc
    return {"ok": "never"}


@app.get("/breakers")
async def states() -> dict[str, str]:
    return {mode: breaker.state for mode, breaker in breakers.items()}


@app.get("/work")
async def work() -> dict[str, int]:
    """The application's own thread work (the default executor), bounded."""
    return {"answer": await asyncio.wait_for(asyncio.to_thread(lambda: 42), 2)}


@app.get("/threads")
async def threads() -> dict[str, int]:
    return {"checks": sum(t.name.startswith("qm-otel-check") for t in threading.enumerate())}


@app.get("/log")
async def write_logs(n: int = 1) -> dict[str, int]:
    for index in range(n):
        log.info("line %d", index, extra={"index": index})
    return {"written": n}
