"""Run tags of the platform, in one place (sensors set them, assets and sensors read them)."""

POOL_TAG = "curation/pool"  # every run the platform asks for: the pool it serves
DROP_TAG = "curation/drop"  # a drop's run: the drop id
FIT_TAG = "curation/fit"  # a run that fits a pool's tree: the pool
REFIT_TAG = "curation/refit"  # "force": fit anew even when no drop changed
REASON_TAG = "curation/refit_reason"  # why the fit was asked for
