"""Reports on a .nsk file: sizes read from disk (`sizes`), the HTML page (`html`), its plots
(`plots`) and the benchmark / sensitivity JSON it can include (`inputs`)."""
