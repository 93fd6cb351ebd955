"""The paper's numbers for the GEMINI-MIP pre-training tables (Tables III and VI) and their cost
(Table IX), as rendered beside ours by :mod:`gemini_pl.reproduce.mip_table`.

DSC in %, AVD = average Hausdorff distance; each entry ``(dsc, dsc_std, avd, avd_std)``.
``SCENES`` says which downstream task is *inner-scene* (the pre-training data's anatomy and
modality) and which is *inter-scene*, as the paper labels them; the gap coefficient
(:func:`gemini_pl.reproduce.mip_table.gap_coefficient`) is computed from that split.
"""

from __future__ import annotations

__all__ = ["MIP_TABLES", "SCENES", "TABLE3", "TABLE6", "TABLE9_FLOPS", "TABLE9_DOWNSTREAM"]

_TABLE3 = """
|Scratch (2D U-Net)|81.8±8.2|9.00±6.37|74.1±12.3|3.59±1.97|65.0±4.4|1.27±0.21
Sup|ImageNet|92.0±3.1|4.09±1.64|72.6±15.5|4.78±4.86|71.1±19.8|1.35±2.07
GRL|Denoising|83.9±7.8|11.17±7.81|60.3±17.7|7.55±5.18|67.7±2.1|1.21±0.08
GRL|In-painting|85.1±6.6|16.59±10.74|64.4±16.4|5.79±4.13|66.2±2.3|1.26±0.08
GRL|Models Genesis|86.1±4.6|6.22±2.27|66.6±16.3|5.86±3.14|88.1±3.1|0.32±0.10
GRL|Rotation|80.5±7.7|20.62±12.55|69.7±15.3|6.45±4.33|78.3±2.6|0.75±0.09
CRL|SimSiam|87.2±5.1|11.87±8.10|72.6±13.3|4.10±3.25|76.7±2.1|0.82±0.06
CRL|BYOL|89.4±4.9|8.48±4.37|74.1±12.6|3.87±2.93|70.5±2.1|1.08±0.07
CRL|SimCLR|89.0±4.0|11.28±6.53|74.4±11.3|3.68±2.65|79.0±2.6|1.02±0.40
CRL|MoCov2|84.3±6.5|11.06±5.19|69.6±14.4|6.28±4.70|82.9±3.6|0.52±0.12
CRL|DeepCluster|84.0±8.1|19.71±13.15|72.7±15.1|4.91±3.50|60.0±2.2|1.52±0.07
DCRL|VADeR|85.2±5.1|7.15±3.05|62.8±15.6|7.23±4.73|86.1±3.4|0.40±0.12
DCRL|DenseCL|85.0±6.3|11.74±7.02|70.8±14.8|5.48±3.95|76.8±2.9|1.22±0.68
DCRL|SetSim|85.2±5.1|9.63±7.64|70.8±14.4|4.92±3.26|74.9±2.5|0.89±0.08
DCRL|DSC-PM|90.5±3.5|5.44±2.87|77.2±12.2|3.87±3.34|83.3±2.4|0.74±0.64
DCRL|PixPro|91.5±3.3|9.83±5.34|73.6±12.9|4.00±3.33|63.9±2.0|1.35±0.06
DCRL|GLCL|87.3±5.8|9.35±4.68|76.5±11.9|4.33±2.94|82.8±2.6|0.56±0.09
DCRL|GVSL-MIP|89.7±3.7|10.52±7.23|78.9±11.2|2.95±1.55|89.7±2.6|0.27±0.08
Ours|GEMINI-MIP|92.1±2.8|5.38±2.65|79.1±11.1|3.22±2.24|89.8±2.6|0.27±0.08
"""

_TABLE6 = """
|Scratch (3D U-Net)|72.4±16.3|6.11±5.91|84.0±3.2|0.52±0.14
Sup|Med3D|81.7±12.0|2.61±2.77|72.7±19.0|1.57±2.56
GRL|Denoising|70.0±15.4|7.60±5.03|83.7±3.3|1.71±0.20
GRL|In-painting|69.7±17.1|7.57±5.93|88.5±3.1|0.32±0.11
GRL|Models Genesis|75.8±13.7|4.64±4.49|88.7±3.1|0.31±0.10
GRL|Rotation|77.4±14.3|4.82±6.29|89.4±2.6|0.28±0.08
CRL|SimSiam|83.8±11.9|3.69±7.47|87.3±3.1|0.36±0.10
CRL|BYOL|83.6±11.2|2.78±5.42|89.7±2.4|0.27±0.08
CRL|SimCLR|78.9±13.9|4.49±5.15|89.2±3.0|0.30±0.14
CRL|MoCov2|78.0±15.3|4.42±5.67|89.7±2.4|0.28±0.11
CRL|DeepCluster|79.7±13.7|4.28±5.76|89.8±2.4|0.27±0.08
DCRL|VADeR|72.1±13.8|6.56±5.89|87.4±3.6|0.35±0.11
DCRL|DenseCL|74.0±15.8|6.42±8.21|87.7±3.8|0.34±0.13
DCRL|SetSim|73.5±15.9|6.34±6.68|88.4±3.1|0.32±0.10
DCRL|DSC-PM|79.0±14.6|4.90±6.05|88.5±3.4|0.32±0.13
DCRL|PixPro|80.0±14.4|4.60±6.25|89.9±2.4|0.27±0.07
DCRL|GLCL|70.7±16.9|7.33±7.05|87.4±3.2|0.34±0.09
DCRL|GVSL-MIP|84.3±10.3|2.85±5.12|89.1±2.8|0.31±0.11
Ours|GEMINI-MIP|85.0±10.2|2.55±5.71|90.0±2.4|0.26±0.07
"""


def _pm(text: str) -> tuple[float, float]:
    m, s = text.split("±")
    return float(m), float(s)


def _parse(text: str, tasks: tuple[str, ...]) -> dict[str, tuple[str, dict[str, tuple[float, float, float, float]]]]:
    out = {}
    for line in text.strip().splitlines():
        typ, name, *vals = line.split("|")
        out[name] = (typ, {t: (*_pm(vals[2 * i]), *_pm(vals[2 * i + 1])) for i, t in enumerate(tasks)})
    return out


#: row → (type, {task: (dsc, dsc_std, avd, avd_std)}); Table III: 2D U-Net pre-trained on ChestX-ray8
TABLE3 = _parse(_TABLE3, ("T1", "T2", "T3"))
#: Table VI: 3D U-Net pre-trained on PPMI brain MRI
TABLE6 = _parse(_TABLE6, ("T2", "T3"))

#: task → "inner" / "inter" (scene relative to the pre-training data), per table
SCENES = {"III": {"T1": "inner", "T2": "inter", "T3": "inter"}, "VI": {"T2": "inter", "T3": "inner"}}

#: the table id → its paper numbers
MIP_TABLES = {"III": TABLE3, "VI": TABLE6}

#: Table IX: pre-training GFLOPs per step (2D), by row; the downstream (fine-tuning) step of every row
TABLE9_FLOPS = {"Rotation": 5.99, "BYOL": 11.98, "Models Genesis": 19.74, "VADeR": 39.67, "GEMINI-MIP": 52.59}
TABLE9_DOWNSTREAM = 20.15
