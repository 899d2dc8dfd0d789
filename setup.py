"""Package NDCL. Dataflow workers install the same file through ``--setup_file``."""

from setuptools import Extension, find_packages, setup

# One place for dependency pins: Beam 2.77 wants numpy < 2.5 and its DataFrame API and
# ReadFromCsv break with pandas 3.x (the dataframe extra wants pandas < 2.4).
BEAM_VERSION = "2.77.0"
REQUIRES = [
    f"apache-beam[gcp]=={BEAM_VERSION}",
    "numpy>=2.0,<2.5",
    "pandas>=2.2,<2.4",
    "pyarrow>=16,<26",
    "jax>=0.4.30",
    "scikit-learn>=1.4",
    "sqlalchemy>=2.0,<3",
    "alembic>=1.13",  # benchmark database schema migrations (beam_pipeline/migrations)
    "psycopg[binary]>=3.1",  # PostgreSQL driver: --db-url postgresql+psycopg://...
    "xxhash>=3.4",
    # Input decoding (transforms.records): ISA-L gzip (about 3x zlib, on its own thread) and
    # orjson (about 3x json.loads, where it certainly agrees); both optional in the code.
    "isal>=1.6",
    "orjson>=3.9",
    "ray[default]>=2.40",
    "google-cloud-storage>=2.14",
    "pyyaml>=6",
    "psutil>=5.9",
    # Beam's stager packages this project for remote workers with `python -m build` (else
    # it logs "No module named build" and falls back to the deprecated `setup.py sdist`).
    "build>=1.2",
    "rich>=13",  # the live progress line on a terminal (beam_pipeline.progress)
    "matplotlib>=3.8",  # ndcl report: PNG plots (Agg backend, no display needed)
    "jinja2>=3.1,<4",  # ndcl report: HTML page from templates/report.html.j2 (autoescape)
    "scipy>=1.11",  # sparse term matrices (transforms.embed), graph components (evaluation)
]

# The compiled feature kernel (transforms/_feature_kernel.c, plain C and the CPython API, no
# numpy headers), built by `pip install` with the machine's C compiler (gcc or clang; Dataflow
# workers build it from the staged sdist). -O3 vectorises its shingle and minimum loops.
FEATURE_KERNEL = Extension("transforms._feature_kernel", ["transforms/_feature_kernel.c"],
                           extra_compile_args=["-O3", "-std=c11"])

setup(
    name="ndcl",
    version="0.1.0",
    description="Near-duplicate detection and clustering of text corpora on Apache Beam",
    python_requires=">=3.10",
    packages=find_packages(include=["beam_pipeline*", "transforms*", "runners*"]),
    install_requires=REQUIRES,
    ext_modules=[FEATURE_KERNEL],
    extras_require={"dev": ["pytest>=8", "ruff>=0.6", "import-linter>=2.1", "datasketch==2.0.0",
                            "rensa==0.5.0",  # the second ND baseline (benchmarks/)
                            "gcp-storage-emulator>=2024.8"]},
    entry_points={"console_scripts": ["ndcl = beam_pipeline.cli:main"]},
    # The Alembic environment ships as packages (its .py files); the template needs naming.
    package_data={"": ["*.yaml"], "beam_pipeline": ["templates/*.j2"],
                  "beam_pipeline.migrations": ["script.py.mako"]},
)
