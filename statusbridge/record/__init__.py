"""Layer 1, the record: ``BatchJob``, ``BatchStatus`` and the schema-1 file format.

``__all__`` is what the docs present. The other layers import this layer's
helpers (``freeze``, ``utc_now``, ``NumberRange``, ...) by their private module
path, so that exporting them is never needed to reach them.
"""

from statusbridge.record._codec import SCHEMA_VERSION, decode_job, encode_job
from statusbridge.record._frozen import MAX_NESTING, FrozenMap
from statusbridge.record._ids import JOB_ID_PATTERN, validate_job_id
from statusbridge.record._model import FINISHED, BatchJob, BatchStatus

__all__ = [
    "FINISHED",
    "JOB_ID_PATTERN",
    "MAX_NESTING",
    "SCHEMA_VERSION",
    "BatchJob",
    "BatchStatus",
    "FrozenMap",
    "decode_job",
    "encode_job",
    "validate_job_id",
]
