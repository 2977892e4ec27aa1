"""Packaging beyond what pyproject.toml can say: the prompt templates and default configs live
at the top of the repository (``prompts/``, ``configs/``) and ship inside the wheel as the
data-only packages ``llmhni_local._prompts`` and ``llmhni_local._configs``
(``llmhni_local/core/resources.py`` finds them)."""

from setuptools import find_packages, setup

SHIPPED = {"llmhni_local._prompts": "prompts", "llmhni_local._configs": "configs"}

setup(
    packages=[*find_packages(include=["llmhni_local", "llmhni_local.*"]), *SHIPPED],
    package_dir=SHIPPED,
    package_data={name: ["*.toml"] for name in SHIPPED},
)
