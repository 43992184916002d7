"""Benchmark the eval harness: requests over HTTP against the same generations done
in-process with mlx_lm.generate, and concurrency 1 against the experiment's default.

    python benchmarks/eval.py [--model DIR] [--samples N]

Without --model it uses the untrained tiny model (it always generates max_tokens tokens, so
both sides do the same work). Both sides get the same BLAS (pipeline.core.blas.child_env). Prints
numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.blas import child_env
from pipeline.eval.client import ask
from pipeline.eval.run import build_requests, settings_for
from pipeline.eval.serve import start_server
from pipeline.models.refs import resolve
from pipeline.spec.catalog import load_catalog
from pipeline.spec.experiment import load_experiment
from pipeline.spec.prompts import load_prompts

IN_PROCESS = """
import json, sys, time
from mlx_lm import load, generate
from mlx_lm.sample_utils import make_sampler
model_dir, bodies = sys.argv[1], json.load(open(sys.argv[2]))
model, tokenizer = load(model_dir)[:2]
sampler = make_sampler(temp=0.0)
started = time.perf_counter()
for body in bodies:
    prompt = tokenizer.apply_chat_template(
        body["messages"], tools=body.get("tools"), add_generation_prompt=True,
        **(body.get("chat_template_kwargs") or {}))
    generate(model, tokenizer, prompt, max_tokens=body["max_tokens"], sampler=sampler)
print(time.perf_counter() - started)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default="tiny")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=1)
    args = parser.parse_args()
    experiment = load_experiment(args.experiment)
    model = args.model or resolve("tiny:json", experiment)
    catalog = load_catalog()
    settings = settings_for(experiment, args.samples, "0")
    prompts = load_prompts(experiment.eval.prompts, catalog)
    requests = build_requests(experiment, prompts, settings, catalog)
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.json"
        bodies.write_text(json.dumps([r.body for r in requests]))
        out = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, str(model), str(bodies)],
            env=child_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        in_process = float(out.stdout.strip().splitlines()[-1])
        started = time.perf_counter()
        server = start_server(model, Path(tmp) / "server.log")
        startup = time.perf_counter() - started
        timings = {}
        try:
            for concurrency in (1, experiment.eval.concurrency):
                started = time.perf_counter()
                out_path = Path(tmp) / f"c{concurrency}.jsonl"
                ask(server, requests, out_path, concurrency=concurrency)
                timings[concurrency] = time.perf_counter() - started
        finally:
            server.stop()
    print(f"{len(requests)} generations ({args.samples} sample(s) per prompt), model {model}")
    print(f"in-process mlx_lm.generate (sum):  {in_process:8.2f} s")
    print(f"server start (once per eval):      {startup:8.2f} s")
    for concurrency, seconds in timings.items():
        overhead = (seconds - in_process) / in_process * 100
        print(
            f"requests over HTTP, concurrency {concurrency}: {seconds:8.2f} s "
            f"(harness overhead {overhead:+.0f}%)"
        )


if __name__ == "__main__":
    main()
