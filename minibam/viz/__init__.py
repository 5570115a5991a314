"""Pictures of the autograd graph, and a table of parameter gradients.

Files: ``drawing.py`` (the walk, the nodes and edges, collapsing, the DOT text),
``modules.py`` (which module each node belongs to), ``labels.py`` (node labels),
``table.py`` (``grad_table``).

    dot = mb.viz.graph(loss, modules=model)        # graphviz.Digraph, or DOT text
    dot.render("bam", format="svg")                 # needs Graphviz's ``dot`` program
    mb.viz.graph(loss, modules=model, collapse="module")   # one box per top-level child
    print(mb.viz.grad_table(model))

What is drawn. Arrows follow the data: input tensor -> op -> output tensor.

- one rounded box per op (one recorded ``Function`` application), labelled with the
  Function's name and the hyper-parameters it was called with (``ctx.params``), e.g.
  ``Sum axes=(2, 3)`` or ``Conv2d d=4 k=3 p=4``: defaults (stride 1, padding 0,
  dilation 1, ``False``, ``None``) and arrays are left out, kernel/stride/padding/dilation
  are shortened (a pair of equal sizes to one number);
- one ellipse per tensor: shape and dtype, and ``|grad|`` (the Frobenius norm of
  ``.grad``) when the tensor has a gradient and ``grads=True``. Trainable leaves are
  blue (with their dotted name when ``modules`` is given), a Python-number constant
  shows its value, the drawn tensor itself is orange.

Clusters (``modules=`` a Module, or anything whose ``named_parameters()`` yields
``(dotted_name, parameter)`` pairs): every node is drawn inside nested boxes of the
module it belongs to, so BAM's ``channel_att`` and ``spatial_att`` branches are visibly
apart. Ops do not know their module; the rules that place them are in ``modules.py``.
``depth`` cuts module paths to that many names (``None``: no cut).

``collapse="module"`` replaces each module at depth ``depth`` (default 1, the top-level
children) by one 3-D box naming it, with its op and parameter counts and the norm of its
parameters' gradients. Tensors that cross the box's border stay visible, so the box's
inputs and outputs keep their shapes; everything inside it disappears.

Drawing only reads tensors: it records no op, changes no ``.grad`` and no ``_node``.
The graph is walked with an explicit stack, so graphs thousands of ops deep are fine.
[`to_dot`][minibam.viz.to_dot] is the pure text generator; [`graph`][minibam.viz.graph] wraps its result in a
``graphviz.Digraph`` when that package is installed.
"""

from minibam.viz.drawing import graph, to_dot
from minibam.viz.table import grad_table

__all__ = ["grad_table", "graph", "to_dot"]
