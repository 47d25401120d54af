// MathJax settings for the site. pymdownx.arithmatex (generic mode) wraps the maths of the
// Markdown pages in elements of class "arithmatex" with \( \) and \[ \] delimiters; the
// notebooks rendered by mkdocs-jupyter keep their $ and $$ delimiters in Markdown cells.
// MathJax typesets only those two kinds of element, nothing else on the page.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput",
  },
};

// Material's instant navigation swaps page content without a reload: typeset again each time.
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
