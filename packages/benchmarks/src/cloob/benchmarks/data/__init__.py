"""Where the evaluation data comes from: the dataset registry, downloads, folders → labelled
samples, linear-probe splits, image–caption pairs. Imports nothing from models/, tasks/,
reporting/."""
