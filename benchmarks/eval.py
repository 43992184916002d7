"""Benchmark the eval on one build: the path the gate used to take, the path it takes now, and
this machine's limit for the model, on the seed set and the extended set.

    python benchmarks/eval.py --run runs/smol/KEY [--sets seed,extended]
                              [--paths before,gate,limit] [--concurrency N[,N2...]]

    before  the quantized folder served as built (mlx_lm.server's defaults), one request at a
            time: the gate's eval until the float32 expansion
    gate    what the gate serves now (pipeline.models.expanded.served_weights: on mlx's CPU
            backend the quantized folder's float32 expansion), the server batching as many
            requests as are in flight (the experiment's [eval] concurrency, or --concurrency)
    limit   in-process `mlx_lm.generate.batch_generate` of the same prompts on the same
            weights as `gate`: what the machine does with no server and no HTTP

Every path gets the same BLAS (pipeline.core.blas.child_env). Prints, per set and path, the
wall time of the requests (server start apart), completion tokens per second, the routing
score, and the wall time's ratio to the limit's. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.builder import read_record
from pipeline.core.blas import child_env, describe
from pipeline.definitions.catalog import load_catalog
from pipeline.definitions.experiment import Experiment, load_experiment
from pipeline.definitions.prompts import load_prompts
from pipeline.eval.client import read_records
from pipeline.eval.records import eval_files
from pipeline.eval.run import build_requests, run_eval, settings_for
from pipeline.eval.serve import start_server
from pipeline.models.expanded import served_weights

PROMPT_SETS = Path(__file__).resolve().parent.parent / "fixtures" / "prompts"

IN_PROCESS = """
import json, sys, time
from mlx_lm import load
from mlx_lm.generate import batch_generate
model_dir, bodies = sys.argv[1], json.load(open(sys.argv[2]))
model, tokenizer = load(model_dir)[:2]
prompts = [
    tokenizer.apply_chat_template(
        b["messages"], tools=b.get("tools"), add_generation_prompt=True,
        **(b.get("chat_template_kwargs") or {}))
    for b in bodies
]
started = time.perf_counter()
out = batch_generate(model, tokenizer, prompts, max_tokens=[b["max_tokens"] for b in bodies],
                     return_token_ids=True)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "tokens": sum(len(t) for t in out.token_ids)}))
"""


@dataclasses.dataclass(frozen=True)
class Timing:
    path: str
    concurrency: int
    seconds: float
    tokens: int
    overall: float | None = None
    startup: float | None = None


def with_prompts(experiment: Experiment, name: str) -> Experiment:
    return dataclasses.replace(
        experiment,
        eval=dataclasses.replace(experiment.eval, prompts=PROMPT_SETS / f"{name}.toml"),
    )


def completion_tokens(run_dir: Path) -> int:
    records = read_records(eval_files(run_dir)["responses"]).values()
    return sum(
        int(((r.response or {}).get("usage") or {}).get("completion_tokens") or 0) for r in records
    )


def served_eval(
    experiment: Experiment, folder: Path, tmp: Path, name: str, concurrency: int, batch: int | None
) -> Timing:
    run_dir = tmp / name
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = start_server(folder, tmp / f"{name}.log", batch=batch)
    startup = time.perf_counter() - started
    try:
        result = run_eval(
            experiment,
            run_dir,
            server_url=server.url,
            concurrency=concurrency,
            log=lambda line: None,
        )
    finally:
        server.stop()
    summary = result.summary
    return Timing(
        name,
        concurrency,
        summary.seconds,
        completion_tokens(run_dir),
        summary.decision().categories["overall"].mean,
        startup,
    )


def in_process(experiment: Experiment, folder: Path, tmp: Path) -> Timing:
    catalog = load_catalog()
    prompts = load_prompts(experiment.eval.prompts, catalog)
    requests = build_requests(experiment, prompts, settings_for(experiment, 1, "0"), catalog)
    bodies = tmp / "bodies.json"
    bodies.write_text(json.dumps([r.body for r in requests]))
    out = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(folder), str(bodies)],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    done = json.loads(out.stdout.strip().splitlines()[-1])
    return Timing("limit", len(requests), done["seconds"], done["tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a build's run folder")
    parser.add_argument("--sets", default="seed,extended")
    parser.add_argument("--paths", default="before,gate,limit")
    parser.add_argument("--concurrency", default="", help="N or N1,N2,...: the gate path at each")
    args = parser.parse_args()
    record = read_record(args.run / "build.json")
    if record is None:
        raise SystemExit(f"{args.run} is not a build (no build.json)")
    experiment = load_experiment(record.experiment_file)
    quantized = args.run / "quantized"
    concurrencies = [int(n) for n in args.concurrency.split(",") if n] or [
        experiment.eval.concurrency
    ]
    gate_folder = served_weights(quantized, cache_root=args.run).folder
    paths = args.paths.split(",")
    print(f"build {args.run} ({experiment.name}); {describe()}")
    print(f"gate serves: {gate_folder}")
    header = (
        f"{'set':<9} {'path':<7} {'in flight':>9} {'requests':>8} {'wall s':>8} "
        f"{'tokens':>7} {'tok/s':>7} {'overall':>7} {'x limit':>7} {'start s':>7}"
    )
    print(header)
    for name in args.sets.split(","):
        at = with_prompts(experiment, name)
        count = len(load_prompts(at.eval.prompts, load_catalog()))
        timings: list[Timing] = []
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            if "limit" in paths:
                timings.append(in_process(at, gate_folder, tmp))
            if "gate" in paths:
                for n in concurrencies:
                    timings.append(served_eval(at, gate_folder, tmp / f"c{n}", "gate", n, n))
            if "before" in paths:
                timings.append(served_eval(at, quantized, tmp, "before", 1, None))
        limit = next((t.seconds for t in timings if t.path == "limit"), None)
        for t in timings:
            ratio = f"{t.seconds / limit:7.2f}" if limit else f"{'-':>7}"
            overall = f"{t.overall:7.3f}" if t.overall is not None else f"{'-':>7}"
            startup = f"{t.startup:7.1f}" if t.startup is not None else f"{'-':>7}"
            print(
                f"{name:<9} {t.path:<7} {t.concurrency:>9} {count:>8} {t.seconds:8.1f} "
                f"{t.tokens:>7} {t.tokens / t.seconds:7.1f} {overall} {ratio} {startup}",
                flush=True,
            )


if __name__ == "__main__":
    main()
