package modelcontext

/*
#include <stdlib.h>
#include <model_context.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// StopReason says why a prompt's generation ended (mc_sample_batch).
type StopReason int32

// The stop reasons, with the C library's values.
const (
	StopEndOfText StopReason = C.MC_STOP_END_OF_TEXT // produced <|endoftext|>
	StopMaxTokens StopReason = C.MC_STOP_MAX_TOKENS  // produced MaxNewTokens tokens
	StopWindow    StopReason = C.MC_STOP_WINDOW      // the sequence filled the context window
)

// State is a decoding state (mc_state): up to NSeqMax sequences with their keys and values,
// so that appending tokens costs only the new positions (docs/decoding.md). It keeps the
// model alive after the Context is closed. Its methods serialize on a mutex (the C state is
// used by one thread at a time); use several States for parallel work.
type State struct {
	mu  sync.Mutex
	ptr *C.mc_state
}

// NewState creates a decoding state for sequence ids 0..nSeqMax-1 (mc_state_new).
func (c *Context) NewState(nSeqMax int) (*State, error) {
	s := &State{}
	err := c.use(func(p *C.mc_context) error {
		return call("mc_state_new", func() C.mc_status { return C.mc_state_new(p, C.size_t(nSeqMax), &s.ptr) })
	})
	if err != nil {
		return nil, err
	}
	runtime.SetFinalizer(s, (*State).Close)
	return s, nil
}

// Close frees the state (mc_state_free); closing twice is a no-op.
func (s *State) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		C.mc_state_free(s.ptr)
		s.ptr = nil
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

func (s *State) do(f func(p *C.mc_state) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return ErrClosed
	}
	return f(s.ptr)
}

// AppendRow is one sequence's new tokens.
type AppendRow struct {
	Seq    int
	Tokens []uint32
}

// AppendRequest appends several sequences' tokens in one call; Activations and Edits are as
// in ForwardRequest and cover the new positions only.
type AppendRequest struct {
	Rows        []AppendRow
	Activations []ActivationRequest
	Edits       []Edit
	Logits      LogitsChoice
}

// Append runs the new positions and caches their keys and values (mc_state_append); the
// output's tensors are [rows, T_max, ...], rows right-padded.
func (s *State) Append(r AppendRequest) (*ForwardOutput, error) {
	var arena cArena
	defer arena.free()
	var req C.mc_append_request
	if err := call("mc_append_request_init", func() C.mc_status {
		return C.mc_append_request_init(&req, C.size_t(unsafe.Sizeof(req)))
	}); err != nil {
		return nil, err
	}
	n := len(r.Rows)
	total := 0
	for _, row := range r.Rows {
		total += len(row.Tokens)
	}
	if n > 0 {
		seqs := unsafe.Slice((*C.int32_t)(arena.alloc(uintptr(n)*4)), n)
		offsets := unsafe.Slice((*C.size_t)(arena.alloc(uintptr(n+1)*8)), n+1)
		tokens := unsafe.Slice((*C.uint32_t)(arena.alloc(uintptr(total+1)*4)), total+1)
		at := 0
		for i, row := range r.Rows {
			seqs[i] = C.int32_t(row.Seq)
			offsets[i] = C.size_t(at)
			for _, t := range row.Tokens {
				tokens[at] = C.uint32_t(t)
				at++
			}
		}
		offsets[n] = C.size_t(at)
		req.seq_ids, req.n_seq_ids = &seqs[0], C.size_t(n)
		req.offsets, req.n_offsets = &offsets[0], C.size_t(n+1)
		req.tokens, req.n_tokens = unsafe.Pointer(&tokens[0]), C.size_t(total)
		req.token_type = C.MC_TOKENS_UINT32
	}
	if k := len(r.Activations); k > 0 {
		acts := unsafe.Slice((*C.mc_activation)(arena.alloc(uintptr(k)*4)), k)
		layers := unsafe.Slice((*C.int32_t)(arena.alloc(uintptr(k)*4)), k)
		for i, a := range r.Activations {
			acts[i], layers[i] = C.mc_activation(a.Activation), C.int32_t(a.Layer)
		}
		req.activations, req.layers, req.n_activations = &acts[0], &layers[0], C.size_t(k)
	}
	edits, err := arena.edits(r.Edits)
	if err != nil {
		return nil, err
	}
	req.edits, req.n_edits = edits, C.size_t(len(r.Edits))
	req.logits = C.mc_logits_choice(r.Logits)
	var o *ForwardOutput
	err = s.do(func(p *C.mc_state) error {
		var out *C.mc_forward_output
		if err := call("mc_state_append", func() C.mc_status { return C.mc_state_append(p, &req, &out) }); err != nil {
			return err
		}
		o = &ForwardOutput{ptr: out}
		runtime.SetFinalizer(o, (*ForwardOutput).Close)
		return nil
	})
	return o, err
}

// Copy makes sequence dst a copy of src (a fork; mc_state_copy).
func (s *State) Copy(src, dst int) error {
	return s.do(func(p *C.mc_state) error {
		return call("mc_state_copy", func() C.mc_status { return C.mc_state_copy(p, C.int32_t(src), C.int32_t(dst)) })
	})
}

// Remove empties a sequence (mc_state_remove).
func (s *State) Remove(seq int) error {
	return s.do(func(p *C.mc_state) error {
		return call("mc_state_remove", func() C.mc_status { return C.mc_state_remove(p, C.int32_t(seq)) })
	})
}

// Truncate keeps a sequence's first n tokens (mc_state_truncate).
func (s *State) Truncate(seq int, n int64) error {
	return s.do(func(p *C.mc_state) error {
		return call("mc_state_truncate", func() C.mc_status { return C.mc_state_truncate(p, C.int32_t(seq), C.int64_t(n)) })
	})
}

// Len is the number of tokens a sequence holds (mc_state_length).
func (s *State) Len(seq int) (int64, error) {
	var n C.int64_t
	err := s.do(func(p *C.mc_state) error {
		return call("mc_state_length", func() C.mc_status { return C.mc_state_length(p, C.int32_t(seq), &n) })
	})
	return int64(n), err
}

// Generation is one prompt's result of SampleBatch.
type Generation struct {
	Tokens []uint32
	Stop   StopReason
}

// SampleBatch continues several prompts together on one decoding state, prompt i with
// seeds[i] (nil: opts.Seed for every prompt) (mc_sample_batch).
func (c *Context) SampleBatch(prompts [][]uint32, opts SampleOptions, seeds []uint64) ([]Generation, error) {
	o, err := sampleOptions()
	if err != nil {
		return nil, err
	}
	opts.fill(&o)
	n := len(prompts)
	var flat []uint32
	starts := make([]C.size_t, n+1)
	for i, p := range prompts {
		starts[i] = C.size_t(len(flat))
		flat = append(flat, p...)
	}
	starts[n] = C.size_t(len(flat))
	cPrompts, freePrompts := cArray(flat)
	defer freePrompts()
	cStarts, freeStarts := cArray(starts)
	defer freeStarts()
	cSeeds, freeSeeds := cArray(seeds)
	defer freeSeeds()
	capacity := n * int(opts.MaxNewTokens)
	out, freeOut := cArray(make([]uint32, capacity+1))
	defer freeOut()
	offsets, freeOffsets := cArray(make([]C.size_t, n+1))
	defer freeOffsets()
	reasons, freeReasons := cArray(make([]C.mc_stop_reason, n+1))
	defer freeReasons()
	var total C.size_t
	err = c.use(func(p *C.mc_context) error {
		return call("mc_sample_batch", func() C.mc_status {
			return C.mc_sample_batch(p, (*C.uint32_t)(cPrompts), C.size_t(len(flat)), (*C.size_t)(cStarts), C.size_t(n+1),
				&o, (*C.uint64_t)(cSeeds), C.size_t(len(seeds)), (*C.uint32_t)(out), C.size_t(capacity),
				(*C.size_t)(offsets), C.size_t(n+1), (*C.mc_stop_reason)(reasons), C.size_t(n), &total)
		})
	})
	if err != nil {
		return nil, err
	}
	toks := unsafe.Slice((*uint32)(out), capacity+1)
	offs := unsafe.Slice((*C.size_t)(offsets), n+1)
	why := unsafe.Slice((*C.mc_stop_reason)(reasons), n)
	gens := make([]Generation, n)
	for i := range gens {
		gens[i] = Generation{append([]uint32(nil), toks[offs[i]:offs[i+1]]...), StopReason(why[i])}
	}
	return gens, nil
}
