// MathJax's configuration; the site serves MathJax itself (javascripts/vendor/mathjax/),
// so math typesets with no network. Two kinds of math reach it:
// - the Markdown pages: pymdownx.arithmatex (generic mode) wraps every formula in an
//   element of class "arithmatex", with \( \) or \[ \] delimiters;
// - the notebook pages: nbconvert leaves the notebooks' $...$ and $$...$$ as they were,
//   inside elements of class "jp-RenderedMarkdown".
// Typeset those and nothing else (code blocks keep their dollars and backslashes).
// MathJax typesets each page once, when it loads: the site has no instant navigation
// (Material's offline plugin turns it off), so no page is swapped in without a reload.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    // Skip the page body (class md-typeset) except those elements. MathJax re-applies the
    // ignore pattern to every element without a class, so it must not match an empty
    // class: the <p> inside a notebook's Markdown cell would be skipped again.
    ignoreHtmlClass: "md-typeset",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown",
  },
  // SVG output draws each glyph as a path: no web fonts, which a page opened from
  // file:// could not load.
  svg: {
    fontCache: "global",
  },
};
