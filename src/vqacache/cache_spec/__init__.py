"""The on-disk contract between stage one (featurize) and stage two (heads).

Everything either stage needs to agree on lives here: the :class:`FeatureSpec` and its
fingerprint, the store layout, and the reader/writer. This package imports nothing else
from vqacache.
"""

from vqacache.cache_spec.errors import (
    InvalidVideoId,
    NotComplete,
    SpecError,
    SpecMismatch,
    StoreError,
    UnknownName,
    UsageError,
    VqaCacheError,
)
from vqacache.cache_spec.keys import id_to_key, key_to_id, validate_id
from vqacache.cache_spec.lease import Lease, LeaseLost, lease_dir, try_claim
from vqacache.cache_spec.layout import store_path
from vqacache.cache_spec.patch_frames import patch_frame_rows, subgrid_rows
from vqacache.cache_spec.spec import (
    FORMAT_VERSION,
    FeatureSpec,
    OutputSpec,
    PreprocessSpec,
    SamplingSpec,
    WeightsSpec,
    parse_fps,
    with_patch_fps,
)
from vqacache.cache_spec.store import FeatureStore, QuestionFeatures, VideoFeatures, new_run_id, open_store
from vqacache.cache_spec.teacher_spec import TeacherSpec, vocab_sha256
from vqacache.cache_spec.token_norm import TokenNorm, require_same_trunk, token_norm_of, trunk_digest
from vqacache.cache_spec.verify import Problem, VerifyReport, delete_corrupt, verify_store

__all__ = [
    "FORMAT_VERSION",
    "FeatureSpec",
    "FeatureStore",
    "InvalidVideoId",
    "Lease",
    "LeaseLost",
    "NotComplete",
    "OutputSpec",
    "PreprocessSpec",
    "Problem",
    "QuestionFeatures",
    "SamplingSpec",
    "SpecError",
    "SpecMismatch",
    "StoreError",
    "TeacherSpec",
    "TokenNorm",
    "UnknownName",
    "UsageError",
    "VerifyReport",
    "VideoFeatures",
    "VqaCacheError",
    "WeightsSpec",
    "delete_corrupt",
    "id_to_key",
    "key_to_id",
    "lease_dir",
    "new_run_id",
    "open_store",
    "parse_fps",
    "patch_frame_rows",
    "require_same_trunk",
    "store_path",
    "subgrid_rows",
    "token_norm_of",
    "trunk_digest",
    "try_claim",
    "validate_id",
    "verify_store",
    "vocab_sha256",
    "with_patch_fps",
]
