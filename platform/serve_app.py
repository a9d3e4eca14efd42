"""A Ray Serve application builder, so a RayService (KubeRay) or `serve deploy` can serve a registry model
without a driver: `import_path: voxray.platform.serve_app:build` with `args:` = the job's `serve:` section.

Host and port come from the Serve config's `http_options` (RayService sets them, usually 0.0.0.0), not from these
args, so this builder cannot tell a loopback-only server from an exposed one: it always requires an API key.
"""

from __future__ import annotations

from typing import Any

from voxray.platform.errors import SpecError, VoxrayError
from voxray.platform.paths import is_remote


def build(args: dict[str, Any]) -> Any:
    """Validate `args` as a `serve:` spec section and return the bound Serve application for its model."""
    from pydantic import ValidationError

    from voxray.platform.specs.loader import format_errors
    from voxray.platform.specs.serve import ServeSpec

    model = str((args or {}).get("model", ""))
    if not (model.startswith("/") or is_remote(model)):
        raise VoxrayError(f"serve args: model {model!r} must be an absolute path or a URI",
                          hint="a Serve config has no job file to resolve relative paths against: use the registry "
                               "entry's full path on shared storage, e.g. /mnt/shared/registry/brats-factorizer")
    try:
        spec = ServeSpec.model_validate(args)
    except ValidationError as exc:
        raise SpecError("serve args", format_errors(exc)) from None
    from voxray.serving.deployment import build_deployment
    from voxray.serving.runner import replica_config

    auto = spec.autoscaling
    return build_deployment(replica_config(spec, host=None), min_replicas=auto.min_replicas,
                            max_replicas=auto.max_replicas, target_ongoing_requests=auto.target_ongoing_requests,
                            max_ongoing_requests=spec.max_ongoing_requests, num_cpus=spec.num_cpus,
                            drain_timeout_s=spec.drain_timeout_s)
