"""Layer 1, the record: ``BatchJob``, ``BatchStatus`` and the schema-1 file format."""

from statusbridge.record._codec import SCHEMA_VERSION, decode_job, encode_job, job_to_dict
from statusbridge.record._eta import batch_eta, elapsed_seconds, job_eta
from statusbridge.record._frozen import MAX_NESTING, FrozenMap, JsonValue, freeze, thaw
from statusbridge.record._ids import JOB_ID_PATTERN, validate_job_id
from statusbridge.record._model import FIELD_NAMES, FINISHED, BatchJob, BatchStatus, utc_now
from statusbridge.record._ranges import AT_LEAST_ONE, POSITIVE, NumberRange
from statusbridge.record._share import floor_share

__all__ = [
    "AT_LEAST_ONE",
    "POSITIVE",
    "FIELD_NAMES",
    "FINISHED",
    "JOB_ID_PATTERN",
    "MAX_NESTING",
    "SCHEMA_VERSION",
    "BatchJob",
    "BatchStatus",
    "FrozenMap",
    "NumberRange",
    "JsonValue",
    "decode_job",
    "encode_job",
    "floor_share",
    "freeze",
    "job_eta",
    "job_to_dict",
    "batch_eta",
    "elapsed_seconds",
    "thaw",
    "utc_now",
    "validate_job_id",
]
