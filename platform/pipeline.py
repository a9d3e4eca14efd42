"""The `pipeline` kind: run the stages in order on one Ray, passing artefacts along (store → model → server)."""

from __future__ import annotations

import logging

from voxray.platform.specs.job import PipelineJob, PreprocessJob, ServeJob, TrainJob, TuneJob
from voxray.platform.stages import StageResult, get_runner

log = logging.getLogger(__name__)
PIPELINE_MODEL = "__pipeline__"


def _stage(kind: str, job) -> StageResult:
    log.info("pipeline %s: stage %s", job.name, kind)
    return get_runner(kind)(job)


def run_pipeline(job: PipelineJob) -> StageResult:
    """preprocess → (tune | train) → serve, each stage optional; a failed stage stops the pipeline.

    A preprocess run with some failed cases goes on with the good ones (the failures stay in the manifest and the
    summary), because one corrupt case must not cost the whole run.
    """
    if job.serve is not None:  # a missing key must stop the pipeline now, not after hours of training
        from voxray.serving.auth import server_digests

        server_digests(job.serve.api_key_env, job.serve.allow_anonymous, job.serve.host, where="pipeline serve stage")
    out = StageResult(kind="pipeline")
    common = dict(name=job.name, ray=job.ray)
    train = job.train
    if job.preprocess is not None:
        res = _stage("preprocess", PreprocessJob(**common, preprocess=job.preprocess))
        _merge(out, "preprocess", res)
        if not res.ok and not res.summary.get("cases_ok"):
            return _fail(out, res, "preprocess produced no usable case")
        if train is not None and train.store is None:
            train = train.model_copy(update={"store": job.preprocess.store})
    model = None
    if job.tune is not None:
        res = _stage("tune", TuneJob(**common, train=train, tune=job.tune))
        _merge(out, "tune", res)
        if not res.ok:
            return _fail(out, res, "the sweep failed")
        model = res.summary.get("model")
    elif train is not None:
        res = _stage("train", TrainJob(**common, train=train))
        _merge(out, "train", res)
        if not res.ok:
            return _fail(out, res, "training failed")
        model = res.summary.get("model")
    if job.serve is not None:
        serve = job.serve
        if serve.model.endswith(PIPELINE_MODEL):
            if not model:
                return _fail(out, None, "no model was exported for serve (is train.export false?)")
            serve = serve.model_copy(update={"model": str(model)})
        res = _stage("serve", ServeJob(**common, serve=serve))
        _merge(out, "serve", res)
        if not res.ok:
            return _fail(out, res, "serving failed to start")
    return out


def _merge(out: StageResult, kind: str, res: StageResult) -> None:
    out.summary.update({f"{kind}.{k}": v for k, v in res.summary.items()})
    out.tables.extend((f"{kind}: {title}", rows) for title, rows in res.tables)


def _fail(out: StageResult, res: StageResult | None, why: str) -> StageResult:
    out.ok = False
    out.message = f"pipeline stopped: {why}" + (f" ({res.message})" if res is not None and res.message else "")
    return out
