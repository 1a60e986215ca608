"""The entity recognizer's token encoder, run as one onnxruntime graph instead of thinc's layers.

Before it picks any move, spaCy's recognizer turns every token into a vector (hashed embeddings of
four word features, a maxout mixer, four residual window layers, a projection) and precomputes
each token's contribution to the move scores. In thinc that is ~25 small layers, each a Python
call with its own temporaries: about 8 ms for 1,000 characters, of which the matrix products are
3.5. The same layers with the same weights as one onnxruntime graph take ~4.5 ms (BENCHMARKS.md).

The graph is built from the loaded model's weights at load time (nothing derived is shipped, so
it always matches the installed model) and checked against thinc on a probe sentence before it
is used: a model whose layers are not the ones expected here is refused with ``ValueError``, and
the caller keeps thinc. Only the hashing of the word features stays in thinc (murmurhash, which
ONNX has no operator for).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_OPSET = 17  # LayerNormalization arrived in 17; ReduceMax still takes its axes as an attribute there
_PROBE = ("Dr. Ana García met Tom O'Neil of Acme Corp. at 10 Downing Street, London, "
          "then flew to New York  on Flight 212 \n with 3 colleagues.")
_TOLERANCE = 1e-3  # float rounding between BLAS libraries is ~1e-5 on values up to ~20


def _only(nodes: list[Any], name: str) -> Any:
    found = [n for n in nodes if n.name == name]
    if len(found) != 1:
        raise ValueError(f"expected one {name!r} layer, found {len(found)}")
    return found[0]


class OnnxTokenEncoder:
    """``encoder(doc)`` -> the recognizer's precomputed token features, (len(doc) + 1, nF, nO, nP).

    Row 0 is the padding row (an absent feature), as in spaCy's ``precompute_hiddens``.
    """

    def __init__(self, tok2vec: Any, lower: Any):
        import onnxruntime

        self._tok2vec, self._lower = tok2vec, lower
        self._columns, self._hash_tables, model_bytes = self._build_graph(tok2vec, lower)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a helper beside llama.cpp keeps to one core
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self._session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        nF, nO, nP, _ = lower.get_param("W").shape
        self._shape = (nF, nO, nP)
        self._padding = lower.get_param("pad").reshape(1, nF, nO, nP)

    def __call__(self, doc: Any) -> np.ndarray:
        n = len(doc)
        features = np.empty((n + 1, *self._shape), dtype=np.float32)
        features[0] = self._padding[0]
        if n:
            features[1:] = self._session.run(None, self._feeds(doc))[0].reshape(n, *self._shape)
        return features

    def check_against(self, make_doc: Any) -> None:
        """Raise ``ValueError`` unless the graph gives thinc's features on a probe sentence."""
        doc = make_doc(_PROBE)
        expected = self._lower.predict(self._tok2vec.predict([doc]))
        got = self(doc)
        if expected.shape != got.shape or not np.allclose(expected, got, rtol=0, atol=_TOLERANCE):
            worst = float(np.abs(expected - got).max()) if expected.shape == got.shape else float("nan")
            raise ValueError(f"the onnx encoder does not reproduce thinc's layers (largest difference {worst})")

    def _feeds(self, doc: Any) -> dict[str, np.ndarray]:  # per scan: ids, hashing, nothing else
        ids = doc.to_array(self._columns).astype(np.uint64)
        ops = self._tok2vec.ops
        return {f"keys{i}": (ops.hash(np.ascontiguousarray(ids[:, column]), seed) % rows).astype(np.int32)
                for i, (column, seed, rows) in enumerate(self._hash_tables)}

    @staticmethod
    def _build_graph(tok2vec: Any, lower: Any) -> tuple[list[int], list[tuple[int, int, int]], bytes]:
        try:
            from onnx import TensorProto, helper, numpy_helper
        except ImportError as exc:
            raise ValueError(f"the onnx package is not installed ({exc})") from exc
        from spacy.attrs import IDS

        tail = [layer.name for layer in tok2vec.layers[1:]]
        if tail != ["list2array", "linear"] or len(tok2vec.layers[0].layers) != 2:
            raise ValueError(f"unexpected token encoder layout: {tok2vec.name}")
        embed, encode = tok2vec.layers[0].layers
        embed_nodes = list(embed.walk())
        # Attribute ids once here, so that no scan looks their names up.
        columns = [IDS[c] if isinstance(c, str) else c for c in _only(embed_nodes, "extract_features").attrs["columns"]]
        hash_layers = [n for n in embed_nodes if n.name == "hashembed"]
        blocks = [n for n in encode.walk() if n.name.startswith("residual(") and ">>residual" not in n.name]
        pad = encode.attrs.get("pad", 0)
        if not hash_layers or not blocks or pad < len(blocks):
            raise ValueError(f"unexpected token encoder layout: {tok2vec.name}")

        initializers: list[Any] = []
        nodes: list[Any] = []

        def const(name: str, value: np.ndarray) -> str:
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
            return name

        def op(kind: str, inputs: list[str], **attrs: Any) -> str:
            out = f"{kind.lower()}_{len(nodes)}"
            nodes.append(helper.make_node(kind, inputs, [out], **attrs))
            return out

        def maxout_norm(x: str, block_nodes: list[Any], tag: str) -> str:
            maxout, norm = _only(block_nodes, "maxout"), _only(block_nodes, "layernorm")
            n_out, n_pieces, n_in = maxout.get_param("W").shape
            y = op("MatMul", [x, const(f"{tag}.W", maxout.get_param("W").reshape(n_out * n_pieces, n_in).T)])
            y = op("Add", [y, const(f"{tag}.b", maxout.get_param("b").reshape(n_out * n_pieces))])
            y = op("Reshape", [y, const(f"{tag}.shape", np.array([-1, n_out, n_pieces], dtype=np.int64))])
            y = op("ReduceMax", [y], axes=[2], keepdims=0)
            # thinc's LayerNorm: (x - mean) / sqrt(variance + 1e-8) * G + b, over the features.
            return op("LayerNormalization", [y, const(f"{tag}.G", norm.get_param("G")),
                                             const(f"{tag}.beta", norm.get_param("b"))], epsilon=1e-8, axis=-1)

        hash_tables, inputs, embedded = [], [], []
        for i, layer in enumerate(hash_layers):
            table = layer.get_param("E")
            hash_tables.append((int(layer.attrs["column"]), int(layer.attrs["seed"]), table.shape[0]))
            inputs.append(helper.make_tensor_value_info(f"keys{i}", TensorProto.INT32, [None, None]))
            rows = op("Gather", [const(f"embed{i}.E", table), f"keys{i}"], axis=0)  # (n, hashes, width)
            embedded.append(op("ReduceSum", [rows, const(f"embed{i}.axis", np.array([1], dtype=np.int64))], keepdims=0))
        x = maxout_norm(op("Concat", embedded, axis=1), embed_nodes, "mix")

        # thinc runs the window layers over the document with ``pad`` zero rows at each end; the
        # padding rows change from layer to layer too, and the edge tokens see them.
        axis0 = const("axis0", np.array([0], dtype=np.int64))
        x = op("Pad", [x, const("outer_pad", np.array([pad, 0, pad, 0], dtype=np.int64))])
        one_each_side = const("window_pad", np.array([1, 0, 1, 0], dtype=np.int64))
        for k, block in enumerate(blocks):
            block_nodes = list(block.walk())
            if _only(block_nodes, "expand_window").attrs.get("window_size") != 1:
                raise ValueError("only window layers of one token each side are supported")
            padded = op("Pad", [x, one_each_side])
            before = op("Slice", [padded, const(f"w{k}.s0", np.array([0], dtype=np.int64)),
                                  const(f"w{k}.e0", np.array([-2], dtype=np.int64)), axis0])
            after = op("Slice", [padded, const(f"w{k}.s2", np.array([2], dtype=np.int64)),
                                 const(f"w{k}.e2", np.array([np.iinfo(np.int64).max], dtype=np.int64)), axis0])
            window = op("Concat", [before, x, after], axis=1)  # (previous, this, next) token
            x = op("Add", [x, maxout_norm(window, block_nodes, f"block{k}")])
        x = op("Slice", [x, const("inner_s", np.array([pad], dtype=np.int64)),
                         const("inner_e", np.array([-pad], dtype=np.int64)), axis0])

        linear = tok2vec.layers[-1]
        x = op("MatMul", [x, const("proj.W", linear.get_param("W").T)])
        x = op("Add", [x, const("proj.b", linear.get_param("b"))])
        weights = lower.get_param("W")  # (nF, nO, nP, nI)
        nF, nO, nP, nI = weights.shape
        lower_weights = const("lower.W", weights.reshape(nF * nO * nP, nI).T)
        nodes.append(helper.make_node("MatMul", [x, lower_weights], ["features"]))
        graph = helper.make_graph(nodes, "entity_token_encoder", inputs,
                                  [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, nF * nO * nP])],
                                  initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        return columns, hash_tables, model.SerializeToString()
