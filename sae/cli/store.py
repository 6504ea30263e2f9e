"""``sae ingest``, ``sae info``, ``sae planted``: bring embeddings into a workspace and describe it."""

from __future__ import annotations

import json
import time

from sae.cli.common import print_info


def _add_ingest(sub) -> None:
    p = sub.add_parser("ingest", help="import embeddings (npy, parquet incl. SAIL format, hdf5, image folder) into a workspace")
    p.add_argument("source", help=".npy / .parquet / .h5 file, or a folder of images")
    p.add_argument("workspace", help="workspace folder (the store goes to WORKSPACE/store.zarr)")
    p.add_argument("--format", choices=["npy", "parquet", "hdf5", "images"], help="default: from the suffix")
    p.add_argument("--meta", help="metadata table (.csv/.tsv/.parquet) aligned with the rows")
    p.add_argument("--id-column", help="column holding row ids (default: id, image_id, path, ... if present)")
    p.add_argument("--embedding-column", default="embedding", help="parquet: vector column (raw bytes or lists)")
    p.add_argument("--dataset", default="embeddings", help="hdf5: the 2-D dataset")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding dtype in the store")
    p.add_argument("--append", action="store_true", help="append to the existing store (one atomic transaction)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--drop-nonfinite", action="store_true", help="drop NaN/Inf rows (recorded in provenance) instead of failing")
    p.add_argument("--encoder", help="name of the model that produced the embeddings (recorded)")
    p.add_argument("--image-size", type=int, default=224, help="images: EfficientNet-Lite0 input size")
    p.add_argument("--thumb-size", type=int, default=64, help="images: thumbnail size stored as previews")


def cmd_ingest(args) -> int:
    from sae.run import Workspace
    from sae.store import importers

    ws = Workspace(args.workspace)
    fmt = args.format or importers.guess_format(args.source)
    opts = importers.IngestOptions(
        dest=str(ws.store_path), dtype=args.dtype, append=args.append, overwrite=args.overwrite,
        drop_nonfinite=args.drop_nonfinite, encoder=args.encoder,
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
    from sae.run import Workspace

    ws = Workspace(args.workspace)
    if args.json:
        print(json.dumps(ws.info(), indent=2, default=str))
    else:
        print_info(ws)
    return 0


def cmd_planted(args) -> int:
    from sae.datasets.planted import PlantedConfig, make_planted
    from sae.run import Workspace

    ws = Workspace(args.workspace)
    cfg = PlantedConfig(n_rows=args.rows, dim=args.dim, n_concepts=args.concepts, dtype=args.dtype, seed=args.seed)
    t0 = time.perf_counter()
    _, truth = make_planted(ws.store_path, cfg, overwrite=args.overwrite)
    truth.save(ws.path / "truth.npz")
    print(f"planted {cfg.n_rows:,} x {cfg.dim} ({cfg.n_concepts} concepts) in {time.perf_counter() - t0:.1f} s; truth in {ws.path / 'truth.npz'}")
    print_info(ws)
    return 0
