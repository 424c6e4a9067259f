# Every rule's script: hand the Snakemake object to the matex step named like the rule.
from matex.pipeline import run_step

run_step(snakemake)  # noqa: F821 (injected by Snakemake)
