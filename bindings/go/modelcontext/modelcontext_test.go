package modelcontext_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mc "model_context/bindings/go/modelcontext"
)

// The demo checkpoint (scripts/data.sh demo); MC_DEMO_MODEL overrides.
func modelDir(t *testing.T) string {
	dir := os.Getenv("MC_DEMO_MODEL")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "data", "demo")
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		t.Fatalf("demo checkpoint missing (run scripts/data.sh demo): %v", err)
	}
	return dir
}

func open(t *testing.T) *mc.Context {
	t.Helper()
	c, err := mc.Open(modelDir(t), "cpu")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

type config struct {
	DModel  int64 `json:"d_model"`
	NLayers int64 `json:"n_layers"`
	NHeads  int64 `json:"n_heads"`
	Ctx     int64 `json:"ctx_window"`
}

func readConfig(t *testing.T, c *mc.Context) config {
	t.Helper()
	s, err := c.ConfigJSON()
	if err != nil {
		t.Fatal(err)
	}
	var cfg config
	if err := json.Unmarshal([]byte(s), &cfg); err != nil {
		t.Fatalf("config %q: %v", s, err)
	}
	return cfg
}

func TestVersionMatchesCargo(t *testing.T) {
	toml, err := os.ReadFile(filepath.Join("..", "..", "..", "Cargo.toml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\[package\].*?\nversion = "([^"]+)"`).FindSubmatch(toml)
	if m == nil || mc.Version() != string(m[1]) {
		t.Fatalf("Version() = %q, Cargo.toml says %q", mc.Version(), m)
	}
}

func TestOpenErrorsCarryStatusAndMessage(t *testing.T) {
	_, err := mc.Open("/no/such/model", "cpu")
	var e *mc.Error
	if !errors.As(err, &e) || e.Op != "mc_open" || e.Status != mc.ErrNotFound {
		t.Fatalf("Open(missing) = %#v", err)
	}
	if !errors.Is(err, mc.ErrNotFound) || errors.Is(err, mc.ErrIO) {
		t.Fatalf("errors.Is does not follow the status: %v", err)
	}
	if !strings.Contains(e.Message, "/no/such/model") || !strings.Contains(err.Error(), "MC_ERR_NOT_FOUND") {
		t.Fatalf("message does not name the path and status: %v", err)
	}
	if _, err := mc.Open(modelDir(t), "gpu:0"); !errors.Is(err, mc.ErrInvalidArgument) {
		t.Fatalf("bad device string: %v", err)
	}
	if mc.ErrToken.Error() != "MC_ERR_TOKEN" {
		t.Fatalf("status name %q", mc.ErrToken.Error())
	}
}

func TestConfigAndDimensions(t *testing.T) {
	c := open(t)
	cfg := readConfig(t, c)
	want := map[mc.Dimension]int64{
		mc.DimLayers: cfg.NLayers, mc.DimResidualStreamChannels: cfg.DModel, mc.DimAttnHeads: cfg.NHeads,
		mc.DimMaxContextLength: cfg.Ctx, mc.DimVocabSize: 50257, mc.DimMLPActs: 4 * cfg.DModel, mc.DimSingleton: 1,
	}
	for d, w := range want {
		if n, err := c.DimSize(d); err != nil || n != w {
			t.Errorf("DimSize(%s) = %d, %v; want %d", d, n, err, w)
		}
	}
	if _, err := c.DimSize(mc.Dimension(99)); !errors.Is(err, mc.ErrInvalidArgument) {
		t.Errorf("DimSize(99): %v", err)
	}
}

func TestNamesRoundTrip(t *testing.T) {
	for l := mc.WeightLocation(0); l < mc.WeightCount; l++ {
		if back, err := mc.WeightLocationFromName(l.String()); err != nil || back != l {
			t.Errorf("weight %d %q -> %d, %v", l, l, back, err)
		}
	}
	for d := mc.Dimension(0); d < mc.DimCount; d++ {
		if back, err := mc.DimensionFromName(d.String()); err != nil || back != d {
			t.Errorf("dimension %d %q -> %d, %v", d, d, back, err)
		}
	}
	for a := mc.Activation(0); a < mc.ActCount; a++ {
		if back, err := mc.ActivationFromName(a.String()); err != nil || back != a {
			t.Errorf("activation %d %q -> %d, %v", a, a, back, err)
		}
	}
	if mc.WeightAttnToQuery.String() != "attn.to_query" || mc.ActMLPPostAct.String() != "mlp.post_act" {
		t.Errorf("names: %q %q", mc.WeightAttnToQuery, mc.ActMLPPostAct)
	}
	if _, err := mc.WeightLocationFromName("attn.to_nowhere"); !errors.Is(err, mc.ErrNotFound) {
		t.Errorf("unknown name: %v", err)
	}
	if mc.WeightLocation(1000).String() != "" || mc.Activation(-3).String() != "" {
		t.Errorf("out-of-range location has a name")
	}
}

func TestEveryWeight(t *testing.T) {
	c := open(t)
	cfg := readConfig(t, c)
	for l := mc.WeightLocation(0); l < mc.WeightCount; l++ {
		perLayer, err := l.PerLayer()
		if err != nil {
			t.Fatal(err)
		}
		layers := []int{mc.LayerNone}
		if perLayer {
			layers = []int{0, int(cfg.NLayers) - 1}
		}
		for _, layer := range layers {
			w, err := c.Weight(l, layer)
			if err != nil {
				t.Fatalf("%s layer %d: %v", l, layer, err)
			}
			v, err := w.Float32s()
			if err != nil || w.DType() != mc.Float32 || w.Device().Type != mc.CPU || !w.ReadOnly() {
				t.Fatalf("%s: %v dtype %s device %s read-only %v", l, err, w.DType(), w.Device(), w.ReadOnly())
			}
			last := make([]int64, len(w.Shape()))
			for i, s := range w.Shape() {
				last[i] = s - 1
			}
			if int(w.Offset(last...)) != len(v)-1 {
				t.Fatalf("%s: view of %d elements, last element at %d", l, len(v), w.Offset(last...))
			}
			w.Close()
		}
	}
	// LayerAll stacks the layers; conversion gives the requested dtype.
	q0, _ := c.Weight(mc.WeightAttnToQuery, 0)
	all, err := c.WeightWith(mc.WeightAttnToQuery, mc.LayerAll, mc.WeightOptions{})
	if err != nil || !equal(all.Shape(), append([]int64{cfg.NLayers}, q0.Shape()...)) {
		t.Fatalf("stacked attn.to_query: %v %v", all, err)
	}
	av, _ := all.Float32s()
	qv, _ := q0.Float32s()
	if av[all.Offset(0, 1, 2, 3)] != qv[q0.Offset(1, 2, 3)] {
		t.Fatal("stack's layer 0 differs from layer 0")
	}
	half, err := c.WeightWith(mc.WeightAttnToQuery, 0, mc.WeightOptions{Convert: true, DType: mc.ModelFloat16})
	if err != nil || half.DType() != mc.Float16 || !equal(half.Shape(), q0.Shape()) {
		t.Fatalf("float16 conversion: %v %v", half, err)
	}
	if _, err := mc.Copy[uint16](half); err != nil {
		t.Fatalf("raw float16 view: %v", err)
	}
	if _, err := c.Weight(mc.WeightAttnToQuery, 99); !errors.Is(err, mc.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "layer 99") {
		t.Fatalf("layer 99: %v", err)
	}
}

func TestEmbeddingAndNormalisedWeight(t *testing.T) {
	c := open(t)
	w, err := c.Weight(mc.WeightEmbedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.Embedding("")
	if err != nil {
		t.Fatal(err)
	}
	wv, _ := w.Float32s()
	ev, _ := e.Float32s()
	shape := w.Shape()
	if len(shape) != 2 || shape[0] != 50257 || !equal(shape, e.Shape()) {
		t.Fatalf("embedding shapes %v %v", shape, e.Shape())
	}
	for _, tok := range []int64{0, 995, 50256} {
		for d := int64(0); d < shape[1]; d++ {
			if wv[w.Offset(tok, d)] != ev[e.Offset(tok, d)] {
				t.Fatalf("embedding[%d,%d] differs", tok, d)
			}
		}
	}
	// Normalised along d_model: every row has unit L2 norm, and the tensor is a fresh copy.
	n, err := c.WeightWith(mc.WeightEmbedding, mc.LayerNone, mc.WeightOptions{Normalize: true, NormalizeDim: mc.DimResidualStreamChannels})
	if err != nil {
		t.Fatal(err)
	}
	if n.ReadOnly() {
		t.Fatal("normalised weight flagged read-only")
	}
	nv, _ := n.Float32s()
	for _, tok := range []int64{0, 995, 50256} {
		sum := 0.0
		for d := int64(0); d < shape[1]; d++ {
			x := float64(nv[n.Offset(tok, d)])
			sum += x * x
		}
		if math.Abs(sum-1) > 1e-4 {
			t.Fatalf("row %d has squared norm %f", tok, sum)
		}
	}
	if _, err := mc.Copy[float64](w); err == nil {
		t.Fatal("a float64 view of a float32 tensor")
	}
	if _, err := c.WeightWith(mc.WeightEmbedding, mc.LayerNone, mc.WeightOptions{Device: "cuda:7"}); !errors.Is(err, mc.ErrDevice) {
		t.Fatalf("absent device: %v", err)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTokens(t *testing.T) {
	c := open(t)
	ids, err := c.Encode("Hello, world")
	if err != nil || !equal(toI64(ids), []int64{15496, 11, 995}) {
		t.Fatalf("Encode = %v, %v", ids, err)
	}
	text, err := c.Decode(ids)
	if err != nil || string(text) != "Hello, world" {
		t.Fatalf("Decode = %q, %v", text, err)
	}
	if b, err := c.DecodeToken(995); err != nil || string(b) != " world" {
		t.Fatalf("DecodeToken(995) = %q, %v", b, err)
	}
	if id, err := c.EncodeTokenStr(" world"); err != nil || id != 995 {
		t.Fatalf("EncodeTokenStr = %d, %v", id, err)
	}
	if _, err := c.EncodeTokenStr("Hello, world"); !errors.Is(err, mc.ErrToken) {
		t.Fatalf("several tokens: %v", err)
	}
	if _, err := c.Encode("bad \xff utf-8"); !errors.Is(err, mc.ErrInvalidArgument) {
		t.Fatalf("invalid UTF-8: %v", err)
	}
	if _, err := c.DecodeToken(1 << 30); !errors.Is(err, mc.ErrToken) {
		t.Fatalf("id out of range: %v", err)
	}
	if ids, err := c.Encode(""); err != nil || len(ids) != 0 {
		t.Fatalf("empty text: %v %v", ids, err)
	}
	texts := []string{"Hello, world", "", "naïve café ☕", strings.Repeat("token ", 300)}
	batch, err := c.EncodeBatch(texts)
	if err != nil || len(batch) != len(texts) {
		t.Fatal(batch, err)
	}
	for i, text := range texts {
		one, _ := c.Encode(text)
		back, _ := c.Decode(batch[i])
		if !equal(toI64(one), toI64(batch[i])) || !bytes.Equal(back, []byte(text)) {
			t.Fatalf("batch text %d: %v vs %v", i, batch[i], one)
		}
	}
}

func toI64(ids []uint32) []int64 {
	out := make([]int64, len(ids))
	for i, x := range ids {
		out[i] = int64(x)
	}
	return out
}

// forward runs "Hello, world" keeping mlp.post_act of every layer and resid.post_ln_f.
func forward(t *testing.T, c *mc.Context) (ids []uint32, out *mc.ForwardOutput) {
	t.Helper()
	ids, err := c.Encode("Hello, world")
	if err != nil {
		t.Fatal(err)
	}
	out, err = c.Forward(mc.ForwardRequest{
		Tokens: ids, Batch: 1, SeqLen: len(ids),
		Activations: []mc.ActivationRequest{{mc.ActMLPPostAct, mc.LayerAll}, {mc.ActResidPostLnF, mc.LayerNone}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids, out
}

// The logits at position pos are resid.post_ln_f @ unembedding; returns their argmax.
func checkLogits(t *testing.T, c *mc.Context, logits, resid *mc.Tensor, pos int64) int64 {
	t.Helper()
	u, err := c.Weight(mc.WeightUnembedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	lv, _ := logits.Float32s()
	hv, _ := resid.Float32s()
	uv, _ := u.Float32s()
	dModel, vocab := u.Shape()[0], u.Shape()[1]
	best := int64(0)
	for v := int64(0); v < vocab; v++ {
		dot := 0.0
		for d := int64(0); d < dModel; d++ {
			dot += float64(hv[resid.Offset(0, pos, d)]) * float64(uv[u.Offset(d, v)])
		}
		l := float64(lv[logits.Offset(0, pos, v)])
		if math.Abs(l-dot) > 1e-4 {
			t.Fatalf("logits[0,%d,%d] = %f, resid @ unembedding = %f", pos, v, l, dot)
		}
		if l > float64(lv[logits.Offset(0, pos, best)]) {
			best = v
		}
	}
	return best
}

func TestForwardAndSample(t *testing.T) {
	c := open(t)
	cfg := readConfig(t, c)
	ids, out := forward(t, c)
	logits, err := out.Logits()
	if err != nil {
		t.Fatal(err)
	}
	resid, err := out.Get(mc.ActResidPostLnF, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	for layer := 0; layer < int(cfg.NLayers); layer++ {
		a, err := out.Get(mc.ActMLPPostAct, layer)
		if err != nil || !equal(a.Shape(), []int64{1, int64(len(ids)), 4 * cfg.DModel}) {
			t.Fatalf("mlp.post_act layer %d: %v %v", layer, a, err)
		}
	}
	if _, err := out.Get(mc.ActAttnQ, 0); !errors.Is(err, mc.ErrNotFound) {
		t.Fatalf("activation not requested: %v", err)
	}
	if !equal(logits.Shape(), []int64{1, int64(len(ids)), 50257}) || !logits.Contiguous() {
		t.Fatalf("logits shape %v strides %v", logits.Shape(), logits.Strides())
	}
	// Tensors outlive the output they came from.
	out.Close()
	out.Close()
	if _, err := out.Get(mc.ActLogits, mc.LayerNone); !errors.Is(err, mc.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	last := int64(len(ids) - 1)
	best := checkLogits(t, c, logits, resid, last)

	// Greedy sampling continues with the argmax, deterministically.
	opts := mc.DefaultSampleOptions()
	if opts.MaxNewTokens != 16 || opts.Temperature != 0 || !opts.StopAtEndOfText {
		t.Fatalf("default sample options %+v", opts)
	}
	opts.MaxNewTokens = 4
	s1, err := c.Sample(ids, opts)
	if err != nil || len(s1) == 0 || int64(s1[0]) != best {
		t.Fatalf("Sample = %v, %v; argmax %d", s1, err, best)
	}
	s2, _ := c.Sample(ids, opts)
	if !equal(toI64(s1), toI64(s2)) {
		t.Fatalf("greedy sampling differs: %v %v", s1, s2)
	}

	// A batch of two rows, the second right-padded: its first position equals the first row's.
	pad := make([]bool, 2*len(ids))
	tokens := append(append([]uint32{}, ids...), ids[0])
	for i := 1; i < len(ids); i++ {
		tokens = append(tokens, 0)
		pad[len(ids)+i] = true
	}
	out2, err := c.Forward(mc.ForwardRequest{Tokens: tokens, Batch: 2, SeqLen: len(ids), Pad: pad})
	if err != nil {
		t.Fatal(err)
	}
	defer out2.Close()
	l2, _ := out2.Logits()
	v2, _ := l2.Float32s()
	for v := int64(0); v < 50257; v += 997 {
		if math.Abs(float64(v2[l2.Offset(0, 0, v)]-v2[l2.Offset(1, 0, v)])) > 1e-5 {
			t.Fatalf("padded row differs at vocab %d", v)
		}
	}
	if _, err := c.Forward(mc.ForwardRequest{Tokens: ids, Batch: 1, SeqLen: len(ids),
		Activations: []mc.ActivationRequest{{mc.Activation(77), 0}}}); !errors.Is(err, mc.ErrInvalidArgument) {
		t.Fatalf("bad activation: %v", err)
	}
}

// Slices whose lengths disagree with Batch*SeqLen are errors every time, never a pass over
// memory past the slice (the library checks n_tokens and n_pad against batch * seq_len).
func TestForwardMismatchedSlices(t *testing.T) {
	c := open(t)
	ids := []uint32{464, 2068, 7586}
	cases := []mc.ForwardRequest{
		{Tokens: ids, Batch: 1, SeqLen: 5},                     // shorter than SeqLen
		{Tokens: ids, Batch: 1, SeqLen: 2},                     // longer than SeqLen
		{Tokens: ids, Batch: 4, SeqLen: 3},                     // more rows than given
		{Tokens: nil, Batch: 1, SeqLen: 3},                     // no tokens at all
		{Tokens: ids, Batch: 1, SeqLen: 3, Pad: []bool{false}}, // pad too short
		{Tokens: ids, Batch: 1, SeqLen: 3, Pad: make([]bool, 9)},
	}
	for round := 0; round < 50; round++ {
		for i, r := range cases {
			out, err := c.Forward(r)
			if err == nil {
				out.Close()
				t.Fatalf("case %d (round %d) accepted: %+v", i, round, r)
			}
			if !errors.Is(err, mc.ErrInvalidArgument) && !errors.Is(err, mc.ErrNullArgument) {
				t.Fatalf("case %d: %v", i, err)
			}
		}
	}
	var e *mc.Error
	_, err := c.Forward(cases[0])
	if !errors.As(err, &e) || !strings.Contains(e.Message, "n_tokens` = 3 but batch * seq_len = 1 * 5 = 5") {
		t.Fatalf("message does not name the counts: %v", err)
	}
	out, err := c.Forward(mc.ForwardRequest{Tokens: ids, Batch: 1, SeqLen: 3})
	if err != nil {
		t.Fatalf("the context is unusable after bad requests: %v", err)
	}
	out.Close()
}

func TestTensorsOutliveContext(t *testing.T) {
	c, err := mc.Open(modelDir(t), "cpu")
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Weight(mc.WeightPositionEmbedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := w.Float32s()
	before := append([]float32(nil), v...)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Weight(mc.WeightEmbedding, mc.LayerNone); !errors.Is(err, mc.ErrClosed) {
		t.Fatalf("Weight after Close: %v", err)
	}
	v, err = w.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if v[i] != before[i] {
			t.Fatalf("element %d changed after Close", i)
		}
	}
	runtime.KeepAlive(w)
}

// waitLive waits for the finalizers to bring the live-tensor count down to want.
func waitLive(t *testing.T, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for mc.LiveTensors() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d tensors live, want %d", mc.LiveTensors(), want)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeleterRunsExactlyOnce(t *testing.T) {
	c := open(t)
	waitLive(t, 0)
	// Dropped tensors are freed by their finalizers.
	for i := 0; i < 200; i++ {
		if _, err := c.Weight(mc.WeightAttnToKey, i%2); err != nil {
			t.Fatal(err)
		}
	}
	if mc.LiveTensors() == 0 {
		t.Fatal("no tensor counted live")
	}
	waitLive(t, 0)
	// Free from many goroutines at once, then the finalizer: one deleter call.
	w, err := c.Weight(mc.WeightEmbedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.Close() }()
	}
	wg.Wait()
	if n := mc.LiveTensors(); n != 0 {
		t.Fatalf("after concurrent Free: %d live", n)
	}
	if _, err := w.Float32s(); !errors.Is(err, mc.ErrFreed) {
		t.Fatalf("view after Free: %v", err)
	}
	w = nil
	waitLive(t, 0)
	// Detach hands ownership over: Go never calls the deleter afterwards.
	d, _ := c.Weight(mc.WeightLayerNormGainFinal, mc.LayerNone)
	if p, err := d.Detach(); err != nil || p == nil {
		t.Fatalf("Detach: %v", err)
	} else {
		mc.FreeDetached(p)
	}
	if _, err := d.Detach(); !errors.Is(err, mc.ErrFreed) {
		t.Fatalf("second Detach: %v", err)
	}
	waitLive(t, 0)
}

// A With callback holds the tensor: Close on another goroutine waits for it, then frees; a
// second Close is a no-op; a copy outlives the tensor.
func TestWithHoldsTheTensorAgainstClose(t *testing.T) {
	c := open(t)
	defer c.Close()
	waitLive(t, 0)
	w, err := c.Weight(mc.WeightEmbedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	want, err := mc.Copy[float32](w)
	if err != nil || len(want) == 0 {
		t.Fatalf("Copy: %v", err)
	}
	inside := make(chan struct{})
	release := make(chan struct{})
	closed := make(chan error)
	done := make(chan error)
	go func() {
		done <- mc.With(w, func(view []float32) error {
			close(inside)
			<-release
			// Still mapped: Close is waiting for this callback.
			for i := range view {
				if view[i] != want[i] {
					return fmt.Errorf("element %d changed: %v != %v", i, view[i], want[i])
				}
			}
			return nil
		})
	}()
	<-inside
	go func() { closed <- w.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a With callback was running")
	case <-time.After(100 * time.Millisecond):
	}
	if n := mc.LiveTensors(); n != 1 {
		t.Fatalf("%d live tensors while the callback runs", n)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := mc.LiveTensors(); n != 0 {
		t.Fatalf("%d live tensors after Close", n)
	}
	if err := mc.With(w, func([]float32) error { return nil }); !errors.Is(err, mc.ErrFreed) {
		t.Fatalf("With after Close: %v", err)
	}
	again, _ := c.Weight(mc.WeightEmbedding, mc.LayerNone)
	defer again.Close()
	fresh, _ := again.Float32s()
	if len(fresh) != len(want) || fresh[len(fresh)-1] != want[len(want)-1] {
		t.Fatalf("the copy taken before Close disagrees with a fresh one (%d vs %d elements)", len(want), len(fresh))
	}
}

// Forced collections while callbacks read tensors nothing else references: the finalizer
// cannot run before a callback returns, and the values read are right.
func TestFinalizerWaitsForViews(t *testing.T) {
	c := open(t)
	defer c.Close()
	waitLive(t, 0)
	ref, err := c.Weight(mc.WeightPositionEmbedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ref.Float32s()
	ref.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		w, err := c.Weight(mc.WeightPositionEmbedding, mc.LayerNone)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(w *mc.Tensor) {
			defer wg.Done()
			errs <- mc.With(w, func(view []float32) error {
				for round := 0; round < 5; round++ {
					runtime.GC()
					for i := range view {
						if view[i] != want[i] {
							return fmt.Errorf("round %d: element %d is %v, want %v", round, i, view[i], want[i])
						}
					}
				}
				return nil
			})
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitLive(t, 0)
}

// OpenWithOptions passes processing options through: centring the unembedding gives columns
// of zero mean over the vocabulary.
func TestOpenWithOptions(t *testing.T) {
	c, err := mc.OpenWithOptions(modelDir(t), mc.OpenOptions{Device: "cpu", CenterUnembed: true, Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	u, err := c.Weight(mc.WeightUnembedding, mc.LayerNone)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	shape := u.Shape() // [d_model, vocab]
	v, _ := u.Float32s()
	for r := int64(0); r < shape[0]; r++ {
		sum := 0.0
		for k := int64(0); k < shape[1]; k++ {
			sum += float64(v[u.Offset(r, k)])
		}
		if math.Abs(sum/float64(shape[1])) > 1e-5 {
			t.Fatalf("row %d of the centred unembedding has mean %g", r, sum/float64(shape[1]))
		}
	}
	if _, err := mc.OpenWithOptions(modelDir(t), mc.OpenOptions{Device: "tpu"}); !errors.Is(err, mc.ErrInvalidArgument) {
		t.Fatalf("bad device: %v", err)
	}
}

func TestConcurrentUseAndClose(t *testing.T) {
	c, err := mc.Open(modelDir(t), "cpu")
	if err != nil {
		t.Fatal(err)
	}
	ids, out := forward(t, c)
	defer out.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				got, err := c.Encode("Hello, world")
				if err != nil || !equal(toI64(got), toI64(ids)) {
					errs <- err
					return
				}
				w, err := c.Weight(mc.WeightAttnToValue, g%2)
				if err != nil {
					errs <- err
					return
				}
				w.Close()
				if _, err := c.Weight(mc.WeightAttnToValue, 1000+g); !errors.Is(err, mc.ErrInvalidArgument) ||
					!strings.Contains(err.Error(), "layer") {
					errs <- err // each goroutine sees its own failure's message
					return
				}
				a, err := out.Get(mc.ActMLPPostAct, g%2)
				if err != nil {
					errs <- err
					return
				}
				a.Close()
				if g == 0 && i == 0 {
					if _, err := c.Forward(mc.ForwardRequest{Tokens: ids, Batch: 1, SeqLen: len(ids)}); err != nil {
						errs <- err
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Close while calls are in flight: each call either completes or reports ErrClosed.
	var wg2 sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			for {
				_, err := c.DimSize(mc.DimLayers)
				if errors.Is(err, mc.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	c.Close()
	wg2.Wait()
}

// Edits, start/stop and the logits choice from Go: a patch of the clean run's residual
// stream reproduces the clean logits exactly; an ablation and a steering vector move them.
func TestExperiments(t *testing.T) {
	c := open(t)
	clean, corrupt := []uint32{464, 2068, 7586, 21831}, []uint32{464, 3105, 7586, 21831}
	last := func(r mc.ForwardRequest) []float32 {
		t.Helper()
		r.Batch, r.SeqLen, r.Logits = 1, 4, mc.LogitsLast
		out, err := c.Forward(r)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		l, err := out.Logits()
		if err != nil {
			t.Fatal(err)
		}
		if s := l.Shape(); len(s) != 3 || s[1] != 1 {
			t.Fatalf("LogitsLast shape %v", s)
		}
		v, _ := l.Float32s()
		return append([]float32(nil), v...)
	}
	diff := func(a, b []float32) float64 {
		d := 0.0
		for i := range a {
			d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		}
		return d
	}
	base := last(mc.ForwardRequest{Tokens: corrupt})
	ablated := last(mc.ForwardRequest{Tokens: corrupt, Edits: []mc.Edit{{
		Location: mc.ActMLPPostAct, Layer: 1, Op: mc.EditSet, Selection: [][]int64{nil, nil, {7}}}}})
	if diff(ablated, base) == 0 {
		t.Fatal("zero-ablating a neuron changed nothing")
	}
	// The clean run's resid.post_mlp of layer 0, patched into the corrupted run.
	out, err := c.Forward(mc.ForwardRequest{Tokens: clean, Batch: 1, SeqLen: 4,
		Activations: []mc.ActivationRequest{{mc.ActResidPostMLP, 0}}})
	if err != nil {
		t.Fatal(err)
	}
	resid, _ := out.Get(mc.ActResidPostMLP, 0)
	rv, _ := resid.Float32s()
	patch := mc.Operand{Data: append([]float32(nil), rv...), Shape: resid.Shape()}
	out.Close()
	patched := last(mc.ForwardRequest{Tokens: corrupt, Edits: []mc.Edit{{
		Location: mc.ActResidPostMLP, Layer: 0, Op: mc.EditReplace, Operand: &patch}}})
	if d := diff(patched, last(mc.ForwardRequest{Tokens: clean})); d != 0 {
		t.Fatalf("patched run differs from the clean run by %g", d)
	}
	// Starting at layer 1 from that residual (no tokens) gives the clean logits too.
	started := last(mc.ForwardRequest{Start: &mc.Start{Layer: 1, Resid: patch}})
	if d := diff(started, last(mc.ForwardRequest{Tokens: clean})); d > 1e-5 {
		t.Fatalf("start at layer 1 differs by %g", d)
	}
	steer := make([]float32, 64)
	steer[0] = 4
	steered := last(mc.ForwardRequest{Tokens: corrupt, Edits: []mc.Edit{{Location: mc.ActResidPostMLP,
		Layer: 0, Op: mc.EditAdd, Operand: &mc.Operand{Data: steer, Shape: []int64{64}}}}})
	if diff(steered, base) == 0 {
		t.Fatal("steering changed nothing")
	}
	// Bad edits are errors naming the cause; a short operand never reaches C.
	_, err = c.Forward(mc.ForwardRequest{Tokens: corrupt, Batch: 1, SeqLen: 4, Edits: []mc.Edit{{
		Location: mc.ActMLPPostAct, Layer: 1, Selection: [][]int64{nil, nil, {9999}}}}})
	if !errors.Is(err, mc.ErrInvalidArgument) || !strings.Contains(err.Error(), "index 9999 out of range") {
		t.Fatalf("out-of-range index: %v", err)
	}
	_, err = c.Forward(mc.ForwardRequest{Tokens: corrupt, Batch: 1, SeqLen: 4, Edits: []mc.Edit{{
		Location: mc.ActResidPostMLP, Layer: 0, Op: mc.EditAdd, Operand: &mc.Operand{Data: steer[:3], Shape: []int64{64}}}}})
	if !errors.Is(err, mc.ErrInvalidArgument) {
		t.Fatalf("short operand: %v", err)
	}
	if _, err = c.Forward(mc.ForwardRequest{Tokens: corrupt, Batch: 1, SeqLen: 4, EndLayer: 1, Logits: mc.LogitsAll}); err != nil {
		t.Fatal(err)
	}
}

// TestAttribution attributes a logit difference to MLP neurons by activation x gradient,
// prints the top ten, and checks the first against an edit that scales it by (1 + 1e-3).
func TestAttribution(t *testing.T) {
	c := open(t)
	ids := []uint32{464, 3139, 286, 4881, 318, 262}
	backward := &mc.Backward{
		Objective: mc.Objective{Kind: mc.ObjectiveLogitDiff, Tokens: []int64{6342}, OtherTokens: []int64{3576}},
		At:        []mc.ActivationRequest{{mc.ActMLPPostAct, mc.LayerAll}},
	}
	req := mc.ForwardRequest{Tokens: ids, Batch: 1, SeqLen: 6, Logits: mc.LogitsNone, Backward: backward,
		Activations: []mc.ActivationRequest{{mc.ActMLPPostAct, mc.LayerAll}}}
	objective := func(r mc.ForwardRequest) (float64, *mc.ForwardOutput) {
		t.Helper()
		out, err := c.Forward(r)
		if err != nil {
			t.Fatal(err)
		}
		v, err := out.Objective()
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		f, _ := v.Float32s()
		return float64(f[0]), out
	}
	before, out := objective(req)
	defer out.Close()
	type score struct {
		layer  int
		neuron int64
		value  float64
	}
	var scores []score
	for l := 0; l < 2; l++ {
		act, err := out.Get(mc.ActMLPPostAct, l)
		if err != nil {
			t.Fatal(err)
		}
		grad, err := out.Grad(mc.ActMLPPostAct, l)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(grad.Shape()) != fmt.Sprint(act.Shape()) {
			t.Fatalf("gradient shape %v, activation %v", grad.Shape(), act.Shape())
		}
		a, _ := act.Float32s()
		g, _ := grad.Float32s()
		dff := int(act.Shape()[2])
		for n := 0; n < dff; n++ {
			s := 0.0
			for p := 0; p < 6; p++ {
				s += float64(a[p*dff+n]) * float64(g[p*dff+n])
			}
			scores = append(scores, score{l, int64(n), s})
		}
		act.Close()
		grad.Close()
	}
	sort.Slice(scores, func(i, j int) bool { return math.Abs(scores[i].value) > math.Abs(scores[j].value) })
	for _, s := range scores[:10] {
		t.Logf("neuron layer=%d index=%d act x grad = %+.6f", s.layer, s.neuron, s.value)
	}
	if _, err := out.Grad(mc.ActMLPPostAct, 5); !errors.Is(err, mc.ErrNotFound) {
		t.Fatalf("a gradient not requested: %v", err)
	}
	top := scores[0]
	scaled := mc.ForwardRequest{Tokens: ids, Batch: 1, SeqLen: 6, Logits: mc.LogitsNone,
		Backward: &mc.Backward{Objective: backward.Objective},
		Edits: []mc.Edit{{Location: mc.ActMLPPostAct, Layer: top.layer, Op: mc.EditScale, Value: 1 + 1e-3,
			Selection: [][]int64{nil, nil, {top.neuron}}}}}
	after, out2 := objective(scaled)
	out2.Close()
	predicted, moved := 1e-3*top.value, after-before
	if math.Abs(moved-predicted) > 0.05*math.Abs(predicted)+1e-6 {
		t.Fatalf("scaling the top neuron moved the objective by %g, act x grad predicts %g", moved, predicted)
	}
	// Bad objectives are errors naming the cause; the context stays usable.
	bad := req
	bad.Backward = &mc.Backward{Objective: mc.Objective{Kind: mc.ObjectiveLogit, Tokens: []int64{1, 2}}}
	if _, err := c.Forward(bad); !errors.Is(err, mc.ErrInvalidArgument) || !strings.Contains(err.Error(), "2 tokens given for a batch of 1") {
		t.Fatalf("two tokens for one row: %v", err)
	}
	bad.Backward = &mc.Backward{Objective: mc.Objective{Kind: mc.ObjectiveLogit, Tokens: []int64{99999}}}
	if _, err := c.Forward(bad); !errors.Is(err, mc.ErrToken) {
		t.Fatalf("token outside the vocabulary: %v", err)
	}
	if again, o := objective(req); again != before {
		t.Fatalf("the same request after errors gives %g, not %g", again, before)
	} else {
		o.Close()
	}
}

// TestDecoding appends to two sequences of a state in one call, forks and truncates, and
// checks each step's last logits against a full forward pass; SampleBatch equals Sample.
func TestDecoding(t *testing.T) {
	c := open(t)
	st, err := c.NewState(3)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	history := [][]uint32{{}, {}, {}}
	lastLogits := func(out *mc.ForwardOutput, row int) []float32 {
		l, err := out.Logits()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		v, _ := l.Float32s()
		vocab := int(l.Shape()[2])
		return append([]float32(nil), v[row*vocab:(row+1)*vocab]...)
	}
	full := func(seq []uint32) []float32 {
		out, err := c.Forward(mc.ForwardRequest{Tokens: seq, Batch: 1, SeqLen: len(seq), Logits: mc.LogitsLast})
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		return lastLogits(out, 0)
	}
	step := func(rows ...mc.AppendRow) {
		t.Helper()
		out, err := st.Append(mc.AppendRequest{Rows: rows, Logits: mc.LogitsLast})
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		for r, row := range rows {
			history[row.Seq] = append(history[row.Seq], row.Tokens...)
			got, want := lastLogits(out, r), full(history[row.Seq])
			d := 0.0
			for i := range got {
				d = math.Max(d, math.Abs(float64(got[i]-want[i])))
			}
			if d > 1e-4 {
				t.Fatalf("sequence %d differs from the full pass by %g", row.Seq, d)
			}
			if n, _ := st.Len(row.Seq); n != int64(len(history[row.Seq])) {
				t.Fatalf("sequence %d holds %d tokens", row.Seq, n)
			}
		}
	}
	step(mc.AppendRow{Seq: 0, Tokens: []uint32{464, 2068, 7586}}, mc.AppendRow{Seq: 1, Tokens: []uint32{15496}})
	step(mc.AppendRow{Seq: 0, Tokens: []uint32{21831}}, mc.AppendRow{Seq: 1, Tokens: []uint32{11, 995}})
	if err := st.Copy(0, 2); err != nil {
		t.Fatal(err)
	}
	history[2] = append([]uint32(nil), history[0]...)
	if err := st.Truncate(1, 1); err != nil {
		t.Fatal(err)
	}
	history[1] = history[1][:1]
	step(mc.AppendRow{Seq: 2, Tokens: []uint32{318}}, mc.AppendRow{Seq: 1, Tokens: []uint32{262, 257}})
	if _, err := st.Append(mc.AppendRequest{Rows: []mc.AppendRow{{Seq: 3, Tokens: []uint32{1}}}}); !errors.Is(err, mc.ErrInvalidArgument) {
		t.Fatalf("sequence id 3 of 3: %v", err)
	}
	if err := st.Copy(2, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(0); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Len(0); n != 0 {
		t.Fatalf("a removed sequence holds %d tokens", n)
	}
	prompts := [][]uint32{{464, 2068, 7586}, {15496, 11}}
	opts := mc.DefaultSampleOptions()
	opts.MaxNewTokens, opts.StopAtEndOfText = 6, false
	gens, err := c.SampleBatch(prompts, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range prompts {
		alone, err := c.Sample(p, opts)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(alone) != fmt.Sprint(gens[i].Tokens) || gens[i].Stop != mc.StopMaxTokens {
			t.Fatalf("prompt %d: batched %v (%d), alone %v", i, gens[i].Tokens, gens[i].Stop, alone)
		}
	}
	st.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Len(0); !errors.Is(err, mc.ErrClosed) {
		t.Fatalf("a closed state: %v", err)
	}
}
