"""The demo and its drivers, outside the product packages (curation, resources, assets,
curation_dags never import it; `curate` names `curation_demo.command` by module name):

- `command`: `curate demo`, the platform end to end on a real or synthetic pool;
- `progress`: what the demo reports on stderr while the daemon works;
- `live`: starts PostgreSQL and `dagster-daemon`, lands drops, waits for runs (the demo, the
  platform benchmark and the live tests);
- `data`: long-tailed drops of real Fashion-MNIST images and of a templated text corpus;
- `synthetic`: long-tailed synthetic embedding pools and precomputed-vector drops (tests,
  benchmarks, the `demo` pool).
"""
