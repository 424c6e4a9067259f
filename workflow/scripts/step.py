# Every rule's script: hand the Snakemake object to the matex step named like the rule.
from matex.pipeline import run_step

if __name__ == "__main__":  # not when a worker process re-imports this script
    run_step(snakemake)  # noqa: F821 (injected by Snakemake)
