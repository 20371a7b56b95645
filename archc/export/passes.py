"""Export as a list of passes over one compiled model (issue 23, item 1).

What the four export call sites did before this module (2026-12, as mapped):

- `archc build` (archc/pipeline.py `export`): `export(c, path, exporter, extra_metadata=options.metadata,
  optimize=options.optimize)` then `add_cache(report, c, module, optimize)`; the only extra metadata is
  `{"weights": ...}` from `--weights`. cli.py `_print_export` prints the report.
- the end of training (archc/train/loop.py `export_model`): the same two calls on the trained module moved to the
  CPU, with `training_metadata` (= `training_summary` | `data_metadata`: labels, source, preprocess, target_scale,
  features, `columns` = the fitted Table *serialized to JSON*, augment, the task's own: tokenizer or diffusion);
  `export()` reads `columns` back with `Table.from_json` (export.tabular.fitted_table) in the same process and
  `target_scale` through export.restore. `conclude` prints its own copy of the report (kv cache, optimize, row).
- `archc export RUN_DIR` (archc/train/api.py `export_run`): compiles spec.json, loads a checkpoint, reads the data
  facts back from the run's export.json (`_data_metadata`, checked by `_checked_export`), rebases `source`, then
  the same two calls (no `add_cache` with `--pixels`); cli.py `_print_export` prints the report (the second copy).
- the pre-training check (archc/train/export_check.py `check_export`): `export()` only, on trained-like weights,
  into a temporary folder, with `data_metadata`, `optimize` only for a tabular model (`"columns" in extra`), no KV
  cache: a different path which said it ran "the same export".

The magic keys steering them: an `extra_metadata` dict whose `target_scale` adds the restoring affine, whose
`columns` adds the row front, whose `labels` replaces archc.task's labels, every other entry becoming `archc.<key>`;
an `optimize` flag threaded through cli, pipeline, compiled, train.recipe/api/loop/export_check/command,
export.onnx and export.kvcache; readers spelling the `archc.*` keys as string literals (runtime.session, .io,
.generate, .sample, .tabular, .pixels, .kvcache, export.quantize, .genai, .tabular, .pixels, tasks.base).
"""
