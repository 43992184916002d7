"""The eval: every prompt x sample x temperature over HTTP, scored, summarised per category.

Outputs land in `<run>/eval/`: responses.jsonl (raw, appended as answers arrive), scores.jsonl
(one scored line per response) and summary.json (per temperature: category means with 95%
intervals against the pre-registered thresholds and the baseline). The first temperature of
the sweep is the decision; the others show whether the verdict survives sampling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline import scoring
from pipeline.catalog import Catalog, load_catalog
from pipeline.client import Record, Request, chat_body, run_requests
from pipeline.experiment import CATEGORIES, ROOT, Experiment, ExperimentError
from pipeline.prompts import EvalPrompt, load_prompts, system_prompt
from pipeline.serve import Server, ServerError, connect, start_server

OVERALL = scoring.OVERALL


class SnapshotDrift(UserWarning):
    """A prompt's extracted calls or score differ from the snapshot of an earlier run."""


@dataclass(frozen=True)
class Settings:
    samples: int
    temperatures: tuple[float, ...]

    @property
    def decision_temperature(self) -> float:
        return self.temperatures[0]


@dataclass(frozen=True)
class Scored:
    prompt: EvalPrompt
    record: Record
    score: scoring.Score
    truncated: bool


@dataclass(frozen=True)
class EvalResult:
    run_dir: Path
    settings: Settings
    scored: tuple[Scored, ...]
    summary: dict[str, Any]

    def decision(self) -> dict[str, Any]:
        return self.summary["temperatures"][_tkey(self.settings.decision_temperature)]

    def at(self, prompt_id: str, temperature: float | None = None) -> list[Scored]:
        t = self.settings.decision_temperature if temperature is None else temperature
        return [s for s in self.scored if s.prompt.id == prompt_id and s.record.temperature == t]


def settings_for(
    experiment: Experiment, samples: int | None = None, temperatures: str | None = None
) -> Settings:
    temps = experiment.eval.temperatures
    if temperatures:
        try:
            temps = tuple(float(t) for t in temperatures.split(","))
        except ValueError as err:
            raise ExperimentError(f"--temperature {temperatures!r}: not numbers") from err
    n = samples if samples is not None else experiment.eval.samples
    if n < 1 or not temps or any(t < 0 for t in temps):
        raise ExperimentError("--samples must be >= 1 and temperatures >= 0")
    return Settings(n, temps)


def build_requests(
    experiment: Experiment, prompts: Sequence[EvalPrompt], settings: Settings, catalog: Catalog
) -> list[Request]:
    ev = experiment.eval
    system = system_prompt(experiment, catalog)
    tools = catalog.openai_tools() if experiment.data.mode == "direct" else None
    kwargs = {"enable_thinking": ev.enable_thinking} if ev.enable_thinking is not None else None
    requests = []
    for temperature in settings.temperatures:
        for prompt in prompts:
            for sample in range(settings.samples):
                body = chat_body(
                    system=system,
                    user=prompt.text,
                    tools=tools,
                    temperature=temperature,
                    max_tokens=prompt.max_tokens or ev.max_tokens,
                    stop=ev.stop,
                    # Greedy decoding needs no seed; sampled runs repeat with one per sample.
                    seed=ev.seed + sample if temperature > 0 else None,
                    chat_template_kwargs=kwargs,
                )
                requests.append(Request(prompt.id, sample, temperature, body))
    return requests


def score_record(
    record: Record, prompt: EvalPrompt, experiment: Experiment, catalog: Catalog
) -> Scored:
    if record.response is None:
        extraction = scoring.Extraction(errors=(f"no response: {record.error}",))
    else:
        choice = (record.response.get("choices") or [{}])[0]
        extraction = scoring.extract(
            choice.get("message") or {}, choice.get("finish_reason"), catalog
        )
    result = scoring.score(
        extraction,
        prompt,
        primary=experiment.eval.score,
        code_mode=experiment.data.mode == "code",
        catalog=catalog,
    )
    return Scored(prompt, record, result, extraction.truncated)


def summarize(
    experiment: Experiment, scored: Sequence[Scored], settings: Settings
) -> dict[str, Any]:
    thresholds = experiment.thresholds.as_dict()
    baseline = experiment.baseline.as_dict()
    per_temperature = {}
    for t in settings.temperatures:
        at_t = [(s.prompt, s.score) for s in scored if s.record.temperature == t]
        categories = scoring.summarize(at_t)
        rows = {}
        for name, cat in categories.items():
            threshold = thresholds.get(name)
            rows[name] = {
                **asdict(cat),
                "threshold": threshold,
                "baseline": baseline.get(name),
                "passed": None if threshold is None else cat.mean >= threshold,
                "fragile": threshold is not None and scoring.fragile(cat, threshold),
            }
        gated = [rows[c]["passed"] for c in (*CATEGORIES, OVERALL) if c in rows]
        per_temperature[_tkey(t)] = {
            "temperature": t,
            "categories": rows,
            "passed": all(gated) if gated else False,
            "errors": sum(1 for s in scored if s.record.temperature == t and s.record.error),
            "truncated": sum(1 for s in scored if s.record.temperature == t and s.truncated),
        }
    decision = per_temperature[_tkey(settings.decision_temperature)]
    return {
        "experiment": experiment.name,
        "fingerprint": experiment.fingerprint(),
        "score": experiment.eval.score,
        "samples": settings.samples,
        "temperatures": per_temperature,
        "decision_temperature": settings.decision_temperature,
        "max_tokens": experiment.eval.max_tokens,
        "enable_thinking": experiment.eval.enable_thinking,
        "stop": list(experiment.eval.stop),
        "seed": experiment.eval.seed,
        "thresholds_pending": experiment.thresholds.pending,
        "verdict": "PENDING"
        if experiment.thresholds.pending
        else ("PASS" if decision["passed"] else "FAIL"),
        "flips": _flips(per_temperature),
        "versions": versions(),
    }


def _flips(per_temperature: dict[str, Any]) -> list[str]:
    """Categories whose pass/fail differs between temperatures of the sweep."""
    verdicts: dict[str, set[Any]] = {}
    for row in per_temperature.values():
        for name, cat in row["categories"].items():
            verdicts.setdefault(name, set()).add(cat["passed"])
    return sorted(name for name, seen in verdicts.items() if len(seen) > 1)


def _tkey(t: float) -> str:
    return f"{t:g}"


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("mlx", "mlx-lm", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def run_eval(
    experiment: Experiment,
    run_dir: Path,
    *,
    model_dir: Path | None = None,
    server_url: str | None = None,
    samples: int | None = None,
    temperatures: str | None = None,
    concurrency: int | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Serve (or connect), ask every prompt, score, and write <run_dir>/eval/."""
    if (model_dir is None) == (server_url is None):
        raise ValueError("run_eval needs exactly one of model_dir or server_url")
    catalog = load_catalog()
    prompts = load_prompts(experiment.eval.prompts, catalog)
    settings = settings_for(experiment, samples, temperatures)
    requests = build_requests(experiment, prompts, settings, catalog)
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    by_id = {p.id: p for p in prompts}
    started = time.monotonic()
    count = [0]

    def progress(record: Record) -> None:
        count[0] += 1
        state = f"error: {record.error}" if record.error else f"{record.seconds:.1f} s"
        log(
            f"[eval] {count[0]}/{len(requests)} {record.prompt_id} s{record.sample} "
            f"T={record.temperature:g} {state}"
        )

    if server_url:
        server: Server = connect(server_url)
    else:
        assert model_dir is not None
        server = start_server(model_dir, out / "server.log")
    try:
        log(f"[eval] {len(requests)} requests to {server.url} (model {server.model_id})")
        records = run_requests(
            server,
            requests,
            out / "responses.jsonl",
            concurrency=concurrency or experiment.eval.concurrency,
            timeout_s=experiment.eval.timeout_s,
            on_record=progress,
        )
    finally:
        server.stop()
    scored = tuple(score_record(r, by_id[r.prompt_id], experiment, catalog) for r in records)
    summary = summarize(experiment, scored, settings)
    summary.update(
        model=str(model_dir) if model_dir else None,
        server_url=server_url,
        model_id=server.model_id,
        restarts=server.restarts,
        seconds=round(time.monotonic() - started, 2),
        requests=len(requests),
    )
    _write_jsonl(out / "scores.jsonl", [_score_line(s) for s in scored])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return EvalResult(run_dir, settings, scored, summary)


def _score_line(s: Scored) -> dict[str, Any]:
    return {
        "prompt_id": s.prompt.id,
        "category": s.prompt.category,
        "text": s.prompt.text,
        "sample": s.record.sample,
        "temperature": s.record.temperature,
        "seconds": s.record.seconds,
        "error": s.record.error,
        "truncated": s.truncated,
        **asdict(s.score),
    }


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def model_run_dir(experiment: Experiment, model_dir: Path) -> Path:
    """Where the eval of a model folder routegate did not build goes: keyed by its content,
    so answers on disk are reused only for the same weights."""
    from pipeline.build import model_digest

    what = json.dumps([str(model_dir.resolve()), model_digest(model_dir)], sort_keys=True)
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    return ROOT / "runs" / experiment.name / f"model-{digest}"


def server_run_dir(experiment: Experiment, url: str) -> Path:
    """A served model's weights are not visible from here: each session starts afresh."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    return ROOT / "runs" / experiment.name / f"server-{digest}-{stamp}"


def main(argv: list[str] | None = None) -> int:
    from pipeline.preflight import add_experiment_options, experiment_from_args

    parser = argparse.ArgumentParser(
        prog="python -m pipeline eval",
        description="Serve a model with mlx_lm.server and score the eval prompts.",
    )
    add_experiment_options(parser)
    parser.add_argument("--model", default=None, help="model folder to serve (default: build)")
    parser.add_argument("--server-url", default=None, help="an already running server")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--temperature", default=None, help="T or T1,T2,... (a sweep)")
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--force", action="store_true", help="build despite a failed preflight")
    args = parser.parse_args(argv)
    try:
        experiment = experiment_from_args(args)
        if args.server_url:
            run_dir, model_dir = server_run_dir(experiment, args.server_url), None
        elif args.model:
            model_dir = Path(args.model).expanduser().resolve()
            run_dir = model_run_dir(experiment, model_dir)
        else:
            from pipeline.build import build

            built = build(experiment, force=args.force)
            run_dir, model_dir = built.run_dir, built.quantized
        result = run_eval(
            experiment,
            run_dir,
            model_dir=model_dir,
            server_url=args.server_url,
            samples=args.samples,
            temperatures=args.temperature,
            concurrency=args.concurrency,
        )
    except (ExperimentError, ServerError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(result.summary))
    from pipeline.report import report_run

    written = report_run(result.run_dir, experiment)
    print(f"report: {written.markdown}")
    return 0 if written.report["verdict"] != "FAIL" else 1


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for key, row in summary["temperatures"].items():
        lines.append(f"temperature {key}:")
        for name, cat in row["categories"].items():
            threshold = cat["threshold"]
            mark = (
                ""
                if threshold is None
                else (" PASS" if cat["passed"] else " FAIL")
                + (" (fragile)" if cat["fragile"] else "")
            )
            against = "" if threshold is None else f"  threshold {threshold:.2f}"
            lines.append(
                f"  {name:<12} {cat['mean']:.3f} [{cat['lo']:.3f}, {cat['hi']:.3f}] "
                f"n={cat['n']}{against}{mark}"
            )
    lines.append(f"verdict: {summary['verdict']}")
    return "\n".join(lines)
