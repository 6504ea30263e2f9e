"""``sae ingest``, ``sae info``, ``sae planted``: bring embeddings into a workspace and describe it."""

from __future__ import annotations

import json
import sys
import time

from sae.cli.common import print_info


def _add_ingest(sub) -> None:
    """The ``sae ingest`` parser."""
    p = sub.add_parser("ingest", help="import embeddings (npy, parquet incl. SAIL format, hdf5, image folder) into a workspace")
    p.add_argument("source", help=".npy / .parquet / .h5 file, or a folder of images")
    p.add_argument("workspace", help="workspace folder (the store goes to WORKSPACE/store.zarr)")
    p.add_argument("--format", choices=["npy", "parquet", "hdf5", "images"], help="default: from the suffix")
    p.add_argument("--meta", help="metadata table (.csv/.tsv/.parquet) aligned with the rows")
    p.add_argument("--id-column", help="column holding row ids (default: id, image_id, path, ... if present)")
    p.add_argument("--text-column", help="metadata column holding each row's text (e.g. the report): stored as text previews, "
                                         "so `sae label` names features by its phrases and hits show it")
    p.add_argument("--group-key", help="metadata column grouping rows (patient, study, volume): evidence caps items per group, "
                                       "labels never name it, held-out splits keep groups whole")
    p.add_argument("--embedding-column", default="embedding", help="parquet: vector column (raw bytes or lists)")
    p.add_argument("--dataset", default="embeddings", help="hdf5: the 2-D dataset")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding dtype in the store")
    p.add_argument("--append", action="store_true", help="append to the existing store (one atomic transaction)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--drop-nonfinite", action="store_true", help="drop NaN/Inf rows (recorded in provenance) instead of failing")
    p.add_argument("--encoder", help="name of the model that produced the embeddings (recorded)")
    p.add_argument("--no-checksums", action="store_true",
                   help="new store: no crc32c checksum per chunk (slightly faster; a flipped bit then reads as a wrong number)")
    p.add_argument("--image-size", type=int, default=224, help="images: EfficientNet-Lite0 input size")
    p.add_argument("--thumb-size", type=int, default=64, help="images: thumbnail size stored as previews")


def cmd_ingest(args) -> int:
    """Import a source into the workspace store (new, ``--overwrite`` or ``--append``), then summarise it.

    Every bad input (a missing or damaged source, a second writer, a full disk, no rows) is one
    ``error:`` line with exit status 2, and the store is left as it was.
    """
    from sae.run import Workspace
    from sae.store import importers

    ws = Workspace(args.workspace)
    fmt = args.format or importers.guess_format(args.source)
    opts = importers.IngestOptions(
        dest=str(ws.store_path), dtype=args.dtype, append=args.append, overwrite=args.overwrite,
        drop_nonfinite=args.drop_nonfinite, encoder=args.encoder, checksums=not args.no_checksums,
        text_column=args.text_column, group_key=args.group_key,
    )
    t0 = time.perf_counter()
    if fmt == "npy":
        store = importers.from_numpy(args.source, opts, meta=args.meta, id_column=args.id_column)
    elif fmt == "parquet":
        store = importers.from_parquet(args.source, opts, embedding_column=args.embedding_column, id_column=args.id_column)
    elif fmt == "hdf5":
        store = importers.from_hdf5(args.source, opts, dataset=args.dataset, meta=args.meta)
    else:
        from sae.encoders import EfficientNetLite0Encoder

        enc = EfficientNetLite0Encoder(image_size=args.image_size)
        store = importers.from_image_folder(args.source, opts, encoder=enc, thumbnail_size=args.thumb_size, meta=args.meta, id_column=args.id_column)
    print(f"ingested {args.source} -> {ws.store_path} in {time.perf_counter() - t0:.1f} s")
    print_info(ws)
    dropped = store.provenance.get("dropped_nonfinite")
    if dropped:
        print(f"dropped {dropped['count']} non-finite rows (recorded in provenance)")
    return 0


def cmd_info(args) -> int:
    """Summarise a workspace; a store that is not internally consistent is reported, never shown as fine.

    The store is validated first (arrays present and long enough for ``n_rows``, every chunk there,
    unique ids). Each problem is one ``warning:`` line on stderr, then the command fails with one
    ``error:`` line and exit status 2 (``--json`` still prints the summary, whose ``store.problems``
    lists them); the human summary is not printed for such a store, since its numbers would be wrong.
    """
    from sae.errors import StoreError
    from sae.run import Workspace

    ws = Workspace(args.workspace)
    problems = ws.open_store().validate()
    if args.json:
        print(json.dumps(ws.info(), indent=2, default=str))
    elif not problems:
        print_info(ws)
    if problems:
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        raise StoreError(f"the store {ws.store_path} is inconsistent ({len(problems)} problem{'s' if len(problems) > 1 else ''} "
                         "above); ingest it again (or restore it from a backup)")
    return 0


def cmd_planted(args) -> int:
    from sae.datasets.planted import PlantedConfig, hierarchical_config, make_planted
    from sae.run import Workspace

    ws = Workspace(args.workspace)
    if args.hierarchy:  # the hierarchy benchmark's dataset (1,024 concepts; 64 parents x 6 children at cosine 0.6)
        cfg = hierarchical_config(n_rows=args.rows, dim=args.dim, seed=args.seed, dtype=args.dtype)
    else:
        cfg = PlantedConfig(n_rows=args.rows, dim=args.dim, n_concepts=args.concepts, dtype=args.dtype, seed=args.seed)
    t0 = time.perf_counter()
    _, truth = make_planted(ws.store_path, cfg, overwrite=args.overwrite)
    truth.save(ws.path / "truth.npz")
    print(f"planted {cfg.n_rows:,} x {cfg.dim} ({cfg.n_concepts} concepts) in {time.perf_counter() - t0:.1f} s; truth in {ws.path / 'truth.npz'}")
    print_info(ws)
    return 0
