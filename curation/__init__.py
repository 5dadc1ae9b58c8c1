"""Pure curation core: hierarchical k-means with resampling, balanced sampling, metrics.

No Dagster import anywhere in this package; the Dagster wiring lives in curation_dags/,
assets/ and resources/.
"""

__version__ = "0.1.0"
