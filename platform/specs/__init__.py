"""Job specs: pydantic v2 models, one module per stage section, a `kind`-discriminated union in `job.py`."""

from voxray.platform.specs.job import JobSpec, job_json_schema
from voxray.platform.specs.loader import apply_overrides, load_job, load_job_dict, validate_job

__all__ = ["JobSpec", "apply_overrides", "job_json_schema", "load_job", "load_job_dict", "validate_job"]
