"""The eval: every prompt x sample x temperature over HTTP, scored, summarised per category.

Outputs land in `<run>/eval/`: responses.jsonl (raw, appended as answers arrive), scores.jsonl
(one scored line per response) and summary.json (per temperature: category means with 95%
intervals against the pre-registered thresholds and the baseline). The first temperature of
the sweep is the decision; the others show whether the verdict survives sampling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.builder import model_digest
from pipeline.core import io
from pipeline.core.errors import BadInput
from pipeline.core.progress import Heartbeat, clock
from pipeline.core.workspace import RunFolder, Workspace
from pipeline.definitions.catalog import Catalog, load_catalog
from pipeline.definitions.experiment import Experiment, ExperimentError
from pipeline.definitions.prompts import EvalPrompt, load_prompts, system_prompt
from pipeline.eval import metrics, scoring
from pipeline.eval.client import (
    NOT_ANSWERED,
    Record,
    Request,
    Stopped,
    ask,
    chat_body,
    first_cause,
)
from pipeline.eval.records import (
    CategoryRow,
    EvalSummary,
    ServedRow,
    ServerRow,
    TemperatureRow,
    eval_files,
    read_scores,
    read_summary,
    temperature_key,
)
from pipeline.eval.serve import (
    Server,
    ServerError,
    check_model_folder,
    connect,
    connect_all,
    same_model,
    server_roots,
    start_server,
)
from pipeline.eval.verdict import PreflightOutcome, judge, judge_run, meets
from pipeline.models.expanded import served_weights

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
    anomalies: tuple[scoring.Anomaly, ...] = ()


@dataclass(frozen=True)
class EvalResult:
    run_dir: Path
    settings: Settings
    scored: tuple[Scored, ...]
    summary: EvalSummary

    def decision(self) -> TemperatureRow:
        return self.summary.decision()

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
    """One reply scored; whatever a reply makes a parser raise scores that reply 0, named."""
    try:
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
        if record.response is None:  # a fault, not the model's answer
            result = dataclasses.replace(result, failure="error")
        # Its line in scores.jsonl must be writable too: io.write_jsonl's UTF-8 has no room
        # for a lone surrogate, and a call nested too deep for json fails there.
        json.dumps(asdict(result), ensure_ascii=False).encode("utf-8")
    except Exception as err:  # RecursionError, a body of the wrong shape, ...: see unscorable
        extraction, result = scoring.unscorable(err)
    return Scored(prompt, record, result, extraction.truncated, extraction.anomalies)


def summarize(
    experiment: Experiment,
    scored: Sequence[Scored],
    settings: Settings,
    *,
    categories: Sequence[str],
    preflight: PreflightOutcome | None = None,
    baseline_run: Path | None = None,
    **run_facts: Any,
) -> EvalSummary:
    """The eval summary: per temperature, each category against its threshold; the paired
    comparison with `baseline_run` at the decision temperature; the verdict
    (pipeline.eval.verdict.judge). `run_facts` are the EvalSummary's facts about the run
    (model, server_url, model_id, seconds, ...)."""
    thresholds = experiment.thresholds
    baseline = experiment.baseline
    per_temperature: dict[str, TemperatureRow] = {}
    for t in settings.temperatures:
        at_t = [s for s in scored if s.record.temperature == t]
        values = values_at(at_t)
        scores = metrics.summarize(values, categories)
        every = metrics.pass_all(values, categories) if settings.samples > 1 else {}
        rows = {}
        for name, cat in scores.items():
            threshold = thresholds.get(name)
            gated = threshold is not None
            rows[name] = CategoryRow(
                **asdict(cat),
                threshold=threshold,
                baseline=baseline.get(name),
                passed=meets(cat.mean, threshold) if gated else None,
                fragile=gated and metrics.fragile(cat, threshold),
                decidable=metrics.decidable(cat, threshold) if gated else None,
                prompts_needed=metrics.prompts_needed(cat.mean, threshold) if gated else None,
                pass_all=every.get(name),
            )
        per_temperature[temperature_key(t)] = TemperatureRow(
            temperature=t,
            categories=rows,
            passed=judge(dataclasses.replace(thresholds, pending=False), rows).outcome == "PASS",
            errors=sum(1 for s in at_t if s.record.error),
            truncated=sum(1 for s in at_t if s.truncated),
            anomalies=_counted(at_t),
        )
    decision = [s for s in scored if s.record.temperature == settings.decision_temperature]
    this = values_at(decision)
    base = baseline_values(baseline_run) if baseline_run else None
    comparison = compare_with(baseline_run, this, base, categories) if base is not None else {}
    rule = experiment.decision.rule
    margins = check_decision(experiment, baseline_run)
    replaces = (
        metrics.non_inferiority(this, base, categories, margins)
        if base is not None and margins
        else {}
    )
    failed = [s.record for s in scored if s.record.error]
    run_facts.setdefault("requests", len(scored))
    summary = EvalSummary(
        experiment=experiment.name,
        fingerprint=experiment.fingerprint(),
        score=experiment.eval.score,
        samples=settings.samples,
        temperatures=per_temperature,
        decision_temperature=settings.decision_temperature,
        max_tokens=experiment.eval.max_tokens,
        enable_thinking=experiment.eval.enable_thinking,
        stop=tuple(experiment.eval.stop),
        seed=experiment.eval.seed,
        thresholds_pending=thresholds.pending,
        verdict="",
        flips=_flips(per_temperature),
        versions=versions(),
        require_decidable=experiment.eval.require_decidable,
        max_drop=experiment.regression.max_drop,
        baseline_run=str(baseline_run) if baseline_run else "",
        paired=comparison,
        decide=rule,
        non_inferiority=replaces,
        **run_facts,
    )
    verdict = judge_run(
        summary, thresholds, preflight=preflight, first_error=first_cause([r.error for r in failed])
    )
    return dataclasses.replace(summary, verdict=verdict.outcome, verdict_reasons=verdict.reasons)


def check_decision(experiment: Experiment, baseline_run: Path | None) -> dict[str, float]:
    """The [decision] margins; bad input when the rule is non-inferiority without a baseline
    run or a margin to decide with."""
    margins = experiment.decision.margins_for(experiment.thresholds)
    if experiment.decision.rule == "non-inferiority" and not (baseline_run and margins):
        raise ExperimentError(
            "--decide non-inferiority needs a baseline run (--baseline-run RUN_DIR or [eval] "
            "baseline_run) and a margin ([decision] margin or margins in the experiment)"
        )
    return margins


def _counted(scored: Sequence[Scored]) -> dict[str, int]:
    """How many replies show each of scoring.ANOMALIES, in that table's order."""
    counts = Counter(kind for s in scored for kind in s.anomalies)
    return {kind: counts[kind] for kind in scoring.ANOMALIES if counts[kind]}


def values_at(scored: Sequence[Scored]) -> list[metrics.PromptValue]:
    """One value per prompt: the mean of its samples (intervals count prompts)."""
    return metrics.prompt_values([(s.prompt.id, s.prompt.category, s.score.value) for s in scored])


def baseline_values(run_dir: Path) -> list[metrics.PromptValue]:
    """An earlier eval's per-prompt values at its decision temperature, from its run folder;
    a folder that is not one is bad input naming the file."""
    decision = read_summary(run_dir).decision_temperature
    rows = []
    for number, row in enumerate(read_scores(run_dir), start=1):
        try:
            if row["temperature"] == decision:
                rows.append((str(row["prompt_id"]), str(row["category"]), float(row["value"])))
        except (ValueError, KeyError, TypeError) as err:
            raise BadInput(
                f"{RunFolder(Path(run_dir)).eval_scores}:{number}: not a scored answer ({err})"
            ) from err
    return metrics.prompt_values(rows)


def compare_with(
    baseline_run: Path | None,
    this: Sequence[metrics.PromptValue],
    base: Sequence[metrics.PromptValue],
    categories: Sequence[str],
) -> dict[str, metrics.PairedRow]:
    """The paired comparison with an earlier run's values (`base`, read from `baseline_run`);
    no prompt in common is bad input."""
    common = {v.prompt_id for v in base} & {v.prompt_id for v in this}
    if not common:
        raise BadInput(
            f"--baseline-run {baseline_run} scored none of this run's {len(this)} prompts "
            f"(its {len(base)} prompts are another set): compare runs of the same prompt set"
        )
    return metrics.paired(this, base, categories)


def _flips(per_temperature: dict[str, TemperatureRow]) -> tuple[str, ...]:
    """Categories whose pass/fail differs between temperatures of the sweep."""
    verdicts: dict[str, set[Any]] = {}
    for row in per_temperature.values():
        for name, cat in row.categories.items():
            verdicts.setdefault(name, set()).add(cat.passed)
    return tuple(sorted(name for name, seen in verdicts.items() if len(seen) > 1))


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
    adapters: Path | None = None,
    server_url: str | Sequence[str] | None = None,
    samples: int | None = None,
    temperatures: str | None = None,
    concurrency: int | None = None,
    preflight: PreflightOutcome | None = None,
    baseline_run: Path | None = None,
    as_built: bool = False,
    only: Collection[str] | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Serve `model_dir` (with `adapters` applied, if given) or connect to `server_url` (one
    URL, or several servers of one model that share the requests), ask every prompt (or the
    prompt ids in `only`), score, and write <run_dir>/eval/. A quantized `model_dir` is served
    through its float32 expansion on mlx's CPU backend (pipeline.models.expanded.
    served_weights), unless `as_built`; the server batches as many requests as the eval keeps
    in flight."""
    if (model_dir is None) == (not server_url):
        raise ValueError("run_eval needs exactly one of model_dir or server_url")
    if baseline_run is None and experiment.eval.baseline_run:
        baseline_run = experiment.source.parent / experiment.eval.baseline_run
    if baseline_run is not None:
        baseline_values(baseline_run)  # a bad baseline fails before any request is asked
    check_decision(experiment, baseline_run)
    catalog = load_catalog()
    prompts = load_prompts(experiment.eval.prompts, catalog)
    if only is not None:
        prompts = [p for p in prompts if p.id in only]
    settings = settings_for(experiment, samples, temperatures)
    requests = build_requests(experiment, prompts, settings, catalog)
    files = eval_files(run_dir)
    files["summary"].parent.mkdir(parents=True, exist_ok=True)
    by_id = {p.id: p for p in prompts}
    started = time.monotonic()
    count = [0]

    def waiting(seconds: float) -> str:
        return f"[eval] {count[0]}/{len(requests)} answered, waiting {clock(seconds)}"

    each = concurrency or experiment.eval.concurrency
    served: ServedRow | None = None
    if server_url:
        servers = connect_all(server_url)  # several: one model, or bad input naming each
    else:
        assert model_dir is not None
        check_model_folder(model_dir)  # named as the folder given, before any expansion
        weights = served_weights(model_dir, cache_root=run_dir, as_built=as_built)
        served = ServedRow(weights.weights, str(weights.folder), weights.why, each)
        if weights.folder != model_dir:
            log(f"[serve] serving {model_dir.name} as its {weights.weights} ({weights.why})")
        servers = [
            start_server(
                weights.folder, files["server_log"], adapters=adapters, batch=each, log=log
            )
        ]
    server = servers[0]
    several = len(servers) > 1

    def progress(record: Record) -> None:
        count[0] += 1
        state = f"error: {record.error}" if record.error else f"{record.seconds:.1f} s"
        by = f" @ {record.server}" if several else ""  # which server: only when there is a choice
        log(
            f"[eval] {count[0]}/{len(requests)} {record.prompt_id} s{record.sample} "
            f"T={record.temperature:g} {state}{by}"
        )

    def lost(gone: Stopped) -> None:
        log(f"[eval] {gone.said()}")

    try:
        if several:
            log(
                f"[eval] {len(requests)} requests to {len(servers)} servers, {each} at a time "
                f"each ({', '.join(s.url for s in servers)}; model {server.model_id})"
            )
        else:
            log(f"[eval] {len(requests)} requests to {server.url} (model {server.model_id})")
        with Heartbeat(log, waiting) as beat:

            def answered(record: Record) -> None:
                progress(record)
                beat()

            asked = ask(
                servers,
                requests,
                files["responses"],
                concurrency=each,
                timeout_s=experiment.eval.timeout_s,
                on_record=answered,
                on_stopped=lost,
            )
    finally:
        for running in servers:
            running.stop()
    records = asked.records
    stopped = [r.error for r in records if r.error.startswith(NOT_ANSWERED)]
    if stopped:
        log(f"[eval] {stopped[0].removeprefix(NOT_ANSWERED)}: {len(stopped)} request(s) unanswered")
    scored = tuple(score_record(r, by_id[r.prompt_id], experiment, catalog) for r in records)
    summary = summarize(
        experiment,
        scored,
        settings,
        categories=tuple(catalog.categories),
        preflight=preflight,
        baseline_run=baseline_run,
        model=str(model_dir) if model_dir else None,
        server_url=_first(server_url),
        model_id=server.model_id,
        restarts=sum(s.restarts for s in servers),
        servers=server_rows(servers, records, asked.stopped),
        seconds=round(time.monotonic() - started, 2),
        requests=len(requests),
        served=served,
        concurrency=each,
    )
    io.write_jsonl(files["scores"], [_score_line(s) for s in scored])
    summary.write(files["summary"])
    return EvalResult(run_dir, settings, scored, summary)


def _first(server_url: str | Sequence[str] | None) -> str | None:
    """The --server-url as given (the first of several: `servers` lists each)."""
    if server_url is None or isinstance(server_url, str):
        return server_url
    return server_url[0] if server_url else None


def server_rows(
    servers: Sequence[Server], records: Sequence[Record], stopped: Sequence[Stopped]
) -> tuple[ServerRow, ...]:
    """Per server, in the order given: the requests it answered (answers reused from an
    earlier run of the same servers included) and those it failed, and, for one that
    stopped mid-run, what became of its requests."""
    if len(servers) == 1:
        # Every record is its: also those from before a restart (on another port) and those
        # reused from an earlier run (a server routegate starts gets a new port each time).
        only = servers[0].url
        records = [dataclasses.replace(r, server=only) for r in records]
    answered = Counter(r.server for r in records if r.response is not None)
    failed = Counter(r.server for r in records if r.error and not r.error.startswith(NOT_ANSWERED))
    gone = {s.url: s for s in stopped}
    return tuple(
        ServerRow(
            url=s.url,
            answered=answered[s.url],
            errors=failed[s.url],
            stopped=gone[s.url].note() if s.url in gone else "",
        )
        for s in servers
    )


def _score_line(s: Scored) -> dict[str, Any]:
    choice = ((s.record.response or {}).get("choices") or [{}])[0]
    try:
        json.dumps(choice, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # a lone surrogate, a body of the wrong shape: keep its repr
        choice = {"message": {"content": repr(choice)}}
    return {
        "prompt_id": s.prompt.id,
        "category": s.prompt.category,
        "text": s.prompt.text,
        "match": s.prompt.match,
        "expected": [asdict(e) for e in s.prompt.expect],
        # the reply as the server sent it, for a person reading the report
        "reply": choice.get("message") if isinstance(choice, dict) else None,
        "finish_reason": choice.get("finish_reason") if isinstance(choice, dict) else None,
        "sample": s.record.sample,
        "temperature": s.record.temperature,
        "seconds": s.record.seconds,
        "error": s.record.error,
        "truncated": s.truncated,
        "anomalies": list(s.anomalies),
        **asdict(s.score),
    }


def eval_run_dir(
    experiment: Experiment,
    workspace: Workspace,
    *,
    model_dir: Path | None = None,
    server_url: str | Sequence[str] | None = None,
    built: bool = False,
) -> Path:
    """Where an eval's answers go, as both doors choose it: a build's own run folder, a folder
    keyed by a given model folder's content, or one keyed by the server and its model."""
    if server_url:
        return server_run_dir(experiment, server_url, workspace)
    if model_dir is None:
        raise ValueError("eval_run_dir needs a model folder or a server URL")
    return model_dir.parent if built else model_run_dir(experiment, model_dir, workspace)


def model_run_dir(experiment: Experiment, model_dir: Path, workspace: Workspace) -> Path:
    """Where the eval of a model folder routegate did not build goes: keyed by its content,
    so answers on disk are reused only for the same weights."""
    what = json.dumps([str(model_dir.resolve()), model_digest(model_dir)], sort_keys=True)
    digest = hashlib.sha256(what.encode()).hexdigest()[:12]
    return workspace.runs(experiment.name) / f"model-{digest}"


def server_run_dir(experiment: Experiment, url: str | Sequence[str], workspace: Workspace) -> Path:
    """Where the eval of a server someone else runs goes: keyed by its root URL and the model
    id it lists, so asking the same server the same requests again reuses its answers, as for
    a model folder. Its weights are not visible from here: the id stands for them (a server
    restarted on other weights under the same id reuses the old answers). Several servers:
    keyed by the sorted set of their roots and the one model id (servers listing different
    ids are bad input, named here before anything is asked), so the same servers given in
    any order reuse their answers."""
    roots = server_roots(url)
    listed = []
    for root in roots:
        # One that does not answer: nothing to reuse there, and run_eval names the fault.
        with contextlib.suppress(ServerError):
            listed.append((root, connect(root).model_id))
    model_id = same_model(listed)
    if len(listed) < len(roots):
        model_id = ""  # as for one server that does not answer: run_eval stops on it
    key: list[Any] = [roots[0], model_id] if len(roots) == 1 else [sorted(roots), model_id]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    return workspace.runs(experiment.name) / f"server-{digest}"
