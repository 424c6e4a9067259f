from pathlib import Path


rule make_synthetic:
    """Generate the embedded synthetic MS-CXR stand-in (JPGs + MS-CXR-format CSV)."""
    output:
        csv=f"{DS}/raw/MS_CXR_Local_Alignment_v1.0.0.csv",
        truth=f"{DS}/raw/synthetic_truth.parquet",
        elements=f"{DS}/raw/synthetic_elements.parquet",
        images=directory(f"{DS}/raw/files"),
    log:
        f"{DS}/logs/make_synthetic.log",
    benchmark:
        f"{DS}/benchmarks/make_synthetic.tsv"
    conda:
        "../envs/report.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        config=step_config("make_synthetic"),
    script:
        "../scripts/step.py"


rule download_mscxr:
    """Fetch the MS-CXR CSV and only the MIMIC-CXR-JPG images it references (PhysioNet credentials)."""
    output:
        csv=f"{config['data']['mscxr']['root']}/{config['data']['mscxr']['csv']}",
    log:
        f"{DS}/logs/download_mscxr.log",
    benchmark:
        f"{DS}/benchmarks/download_mscxr.tsv"
    conda:
        "../envs/report.yaml"
    threads: 4
    resources:
        mem_mb=2000,
        runtime=600,
    params:
        config=step_config("download_mscxr"),
    script:
        "../scripts/step.py"


rule prepare:
    """Group boxes per (image, phrase, category), align boxes to the model input, split by patient, decode images once."""
    input:
        csv=raw_csv(),
    output:
        pairs=f"{DS}/pairs.parquet",
        report=f"{DS}/alignment_report.json",
        images=f"{DS}/images.npy",
    log:
        f"{DS}/logs/prepare.log",
    benchmark:
        f"{DS}/benchmarks/prepare.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        config=step_config("prepare"),
        image_root=lambda wildcards, input: str(Path(input.csv).parent),
    script:
        "../scripts/step.py"


rule parse_phrases:
    """The parse of every pair's phrase: regions, weights, negation, uncertainty, findings (audit)."""
    input:
        pairs=f"{DS}/pairs.parquet",
    output:
        table=f"{DS}/phrases_parsed.parquet",
    log:
        f"{DS}/logs/parse_phrases.log",
    benchmark:
        f"{DS}/benchmarks/parse_phrases.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("parse_phrases"),
    script:
        "../scripts/step.py"


rule figure_prior:
    """The text-guided prior of one phrase per category, laid on the input as the boxes are (audit)."""
    input:
        pairs=f"{DS}/pairs.parquet",
        images=f"{DS}/images.npy",
    output:
        expand(f"{DS}/figures/prior.{{ext}}", ext=config["figures"]["formats"]),
    log:
        f"{DS}/logs/figure_prior.log",
    benchmark:
        f"{DS}/benchmarks/figure_prior.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=step_config("figure_prior"),
    script:
        "../scripts/step.py"
