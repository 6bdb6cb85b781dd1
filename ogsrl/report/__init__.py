"""The results report: :mod:`ogsrl.report.inputs` reads every pipeline output it shows, :mod:`ogsrl.report.figures`
draws the figures (matplotlib → inline SVG), :mod:`ogsrl.report.stage` writes ``data/reports/index.html``."""
