"""The honest parts of training: what a filter learned from, how it went, and where not to trust it.

A trained network always answers, so training here also says what it cannot show by itself:

- `audit`: what is in the training set (sizes, light, colour, near-duplicates) and how narrow it is, before
  training on it; `rotoscope audit` and the card's summary.
- `pitfalls`: the known ways training goes wrong (the photo vanishing, one term swamping the score,
  overfitting, divergence), watched while the run goes and kept in the card's warnings.
- `story`: previews of one held-out photo along the way, palettes and the loss curve, recorded for the story.
- `confidence`: a "this photo is unlike the training set" signal, calibrated at the end of training and
  checked by `rotoscope apply`.
- `explain`: the story page afterwards (`rotoscope explain`), one self-contained HTML file.
- `page`: what the two HTML pages (explain's story, audit's report) share: figures, escaping, markup, CSS.

Nothing is imported here: each module loads what it needs (torch, matplotlib) when it is used.
"""
