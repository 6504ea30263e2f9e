"""Write the example notebooks (01-06) from the cell sources below; outputs are not stored.

Run `python notebooks/make_notebooks.py` after editing. Each notebook starts with the same setup cell:
`SAE_NOTEBOOK_SMALL=1` (set by CI and the test suite) runs it on the small demo in seconds.
"""

from pathlib import Path

import nbformat as nbf

SETUP = '''import os
from pathlib import Path

SMALL = os.environ.get("SAE_NOTEBOOK_SMALL") == "1"  # CI: the small demo (a few hundred slices)
ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
WS = Path(os.environ.get("SAE_WORKSPACE", ROOT / "artifacts" / ("demo-small" if SMALL else "demo")))
print("workspace:", WS, "(small)" if SMALL else "")'''

ENSURE = '''from sae.cli.demo import ensure_demo

ws = ensure_demo(WS, small=SMALL)  # builds only what is missing: store, SAE, offline labels'''

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", "# Quickstart: the MNI152 demo end to end\n\nBuild the demo workspace (real MRI slices from the MNI152 template with torchio artifacts, embedded with EfficientNet-Lite0), train a TopK SAE, label every feature offline, search it in words and audit where quality control fails. Then explore the result with the three linked widgets."),
        ("code", SETUP),
        ("code", "from sae.cli.demo import run_demo\n\nheadlines = run_demo(WS, small=SMALL)  # cached: a second run only recomputes labels, search and audit"),
        ("md", "## Open the run for interactive work\n\nOne `Workbench` holds the run's labels, index and thumbnails; widgets built on the same workbench are linked: a feature picked anywhere opens in the browser, `+` on a concept adds it to the search plan."),
        ("code", "from sae.widgets import ConceptSearch, FailureExplorer, FeatureBrowser, Workbench\n\nwb = Workbench.open(WS)\nwb"),
        ("md", "### Features: filter by label, score, density; open a card; edit a label"),
        ("code", "browser = FeatureBrowser(wb)\nbrowser"),
        ("md", "### Search in words: the plan is editable (drop, re-weight, negate a concept); click a hit for its concepts"),
        ("code", 'search = ConceptSearch(wb, query="axial slices with a spike artifact")\nsearch'),
        ("md", "### Failures: lasso items on the concept map, see what they share; slices with their validation"),
        ("code", "from sae.audit import AuditConfig\nfrom sae.audit.report import audit_run\n\nreport = audit_run(wb.run, failure=\"quality_fail\", with_map=True, index=wb.index,\n                   config=AuditConfig(min_slice_size=5) if SMALL else AuditConfig())\nexplorer = FailureExplorer(report, wb)\nexplorer"),
        ("code", "# what the lasso selected, back in Python\nprint(len(explorer.selection), 'items selected')\nexplorer.selected_concepts()"),
        ("md", "Results are objects too: displayed, they show the live view and carry a static HTML table, so a reopened notebook without its kernel (or GitHub) still shows them."),
        ("code", 'wb.searcher.search("sagittal slices with ghosting artifact", top=8)'),
    ],
    "02_train_and_evaluate.ipynb": [
        ("md", "# Train and evaluate SAEs\n\nTrain SAEs of different architectures on the demo store (streamed from Zarr), encode the store into codes and compare reconstruction, sparsity and probe metrics; the Pareto figure shows FVU against L0."),
        ("code", SETUP), ("code", ENSURE),
        ("code", "from sae.run import Workspace\n\n# sweep in a sibling workspace that links the demo store, so the demo's own SAE stays the newest run there\nsweep_ws = Workspace(WS.parent / f'{WS.name}-sweep')\nsweep_ws.path.mkdir(exist_ok=True)\nif not sweep_ws.store_path.exists():\n    sweep_ws.store_path.symlink_to(ws.store_path.resolve())\nsweep_ws.path"),
        ("code", "from sae.models import SAEConfig\nfrom sae.train import TrainConfig\nfrom sae.sweep import sweep\n\nstore = sweep_ws.open_store()\nepochs = 4 if SMALL else 20\nconfigs = [(SAEConfig(d_in=store.dim, n_latents=256, k=k, arch=arch), TrainConfig(batch_size=256, epochs=epochs))\n           for arch in (\"topk\", \"batchtopk\") for k in (16, 32)]\nresults = sweep(sweep_ws, configs, progress=False)\nresults"),
        ("code", "from sae.viz import pareto_figure\n\nfig = pareto_figure(results)"),
        ("code", "from sae.pipeline import metrics_frame\nfrom sae.run import Run\n\nrun = Run.find(sweep_ws, results.sort_values('fvu')['run'].iloc[0])\nmetrics_frame(run.metrics()).head(20)"),
    ],
    "03_label_features.ipynb": [
        ("md", "# Label features\n\nEvery feature gets an evidence pack (top and quantile examples, hard negatives, metadata enrichment, siblings) and a label. Offline, the metadata labeler writes labels from the enriched terms; with an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama) set `OPENAI_BASE_URL` / `SAE_LLM_MODEL` and the LLM labeler writes them. Every label is scored (detection, intruder, metadata agreement)."),
        ("code", SETUP), ("code", ENSURE),
        ("code", "from sae.interpret import EvidenceBuilder, MetadataLabeler, label_run\nfrom sae.run import Run\n\nrun = Run.find(ws)\nlabels = label_run(run, MetadataLabeler(), progress=False)\nlabels.summary"),
        ("code", "labels.best(8)[['feature', 'label', 'detection', 'intruder', 'metadata_agreement']]"),
        ("code", "labels.worst(5)[['feature', 'label', 'detection', 'intruder', 'metadata_agreement']]"),
        ("code", "store = ws.open_store()\nbuilder = EvidenceBuilder.of(run, progress=False)\npack = builder.pack(int(labels.best(1)['feature'].iloc[0]))\npack"),
        ("code", "import os\n\nif os.environ.get('SAE_LLM_MODEL'):  # an LLM labeler, only when one is configured\n    from sae.interpret import LLMClient, LLMConfig, LLMLabeler\n\n    client = LLMClient(LLMConfig(model=os.environ['SAE_LLM_MODEL']))\n    llm_labels = label_run(run, LLMLabeler(client), features=labels.best(10)['feature'])\n    display(llm_labels)\nelse:\n    print('no LLM configured (set SAE_LLM_MODEL and OPENAI_BASE_URL); the offline labels are used')"),
        ("md", "## Browse and correct labels\n\nA hand edit is recorded with who and when in `label-edits.jsonl` next to the labels, applied on load, and used by search at once."),
        ("code", "from sae.widgets import FeatureBrowser, Workbench\n\nwb = Workbench(run)\nFeatureBrowser(wb, feature=int(labels.best(1)['feature'].iloc[0]))"),
    ],
    "04_language_retrieval.ipynb": [
        ("md", "# Language-driven retrieval\n\nA clinical text query becomes an editable plan over labeled concepts (AND across phrases, OR within a phrase's matches, NOT for negations); items are ranked from the inverted index and every hit shows each concept's contribution."),
        ("code", SETUP), ("code", ENSURE),
        ("code", "from sae.run import Run\nfrom sae.search.searcher import Searcher\n\ns = Searcher(Run.find(ws))\nplan = s.plan(\"sagittal slices with ghosting artifact but no bias field\")\nplan"),
        ("code", "result = s.search(plan, top=10)\nresult"),
        ("code", "# edit the plan: weight the first concept up, exclude a region\nedited = plan.reweight(plan.concepts[0].feature, 2.0)\nCOLUMNS = ['rank', 'id', 'score', 'meta.orientation', 'meta.region', 'meta.artifact']\ns.search(edited.where('region', '!=', 'inferior'), top=5).hits[COLUMNS]"),
        ("code", "# by example, and composed: like this item, but with a noise artifact\nrow = int(result.hits['row'].iloc[0])\ncmp = s.compare_example(row)\nprint(f'sparse vs dense top-10 overlap: {cmp.overlap:.0%}')\nprint('the example:', result.hits[COLUMNS].iloc[0].to_dict())\ns.search('like this one, but with a noise artifact', like=row, top=5).hits[COLUMNS]"),
        ("code", "s.search_groups('spike artifact', pool='max', top=5)"),
        ("code", "from sae.widgets import ConceptSearch, Workbench\n\nConceptSearch(Workbench.of(s), query=\"coronal slices with motion artifact\")"),
    ],
    "05_failure_audit.ipynb": [
        ("md", "# Failure audit\n\nGiven which items fail (here the demo's `quality_fail` column; a numeric score with a threshold, or a probe's errors, work too), find the concepts that explain the failures, cluster the failing items into named slices validated on held-out volumes, and mine look-alikes among the passing items."),
        ("code", SETUP), ("code", ENSURE),
        ("code", "from sae.audit import AuditConfig\nfrom sae.audit.report import audit_run\nfrom sae.run import Run\n\nrun = Run.find(ws)\nreport = audit_run(run, failure='quality_fail', with_map=True,\n                   config=AuditConfig(min_slice_size=5) if SMALL else AuditConfig())\nprint(report.summary())"),
        ("code", "report.slice_table()[['slice', 'name', 'validated', 'holdout_members', 'holdout_failure_rate', 'holdout_lift', 'why_not']]"),
        ("code", "report.significant_concepts(10)[['feature', 'label', 'n_active', 'failure_rate_active', 'failure_rate_inactive', 'q']]"),
        ("code", "report.queue.head(10)  # look-alikes: passing items that match a slice's rule and prototypes"),
        ("code", "from sae.widgets import Workbench, dashboard\n\nwb = Workbench(run)\ndashboard(wb, report)  # linked tabs: features, search, failures"),
    ],
    "06_figures.ipynb": [
        ("md", "# Publication figures\n\nEvery figure is a matplotlib Figure with one consistent style; `save_figure` writes PNG / PDF / SVG at a chosen DPI with editable text. `sae figures WORKSPACE --failure quality_fail` writes the standard set."),
        ("code", SETUP), ("code", ENSURE),
        ("code", "from sae.figures import write_figures\nfrom sae.run import Run\n\nrun = Run.find(ws)\npaths = write_figures(run, WS / 'figures', failure='quality_fail', formats=('png', 'svg'), dpi=150)\nsorted(p.name for p in paths)"),
        ("code", "from IPython.display import Image\n\nImage(filename=str(next(p for p in paths if p.name == 'query.png')), width=700)"),
        ("code", "from sae.search.searcher import Searcher\nfrom sae.viz import query_figure, save_figure\n\ns = Searcher(run)\nres = s.search('axial slices with noise artifact', top=6)\nfig = query_figure(res, s.store.previews(res.hits['row'].to_numpy()))\nsave_figure(fig, WS / 'figures' / 'custom-query', formats=('pdf',), dpi=300)"),
    ],
}


def main() -> None:
    here = Path(__file__).parent
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
        nbf.write(nb, here / name)
        print("wrote", name)


if __name__ == "__main__":
    main()
