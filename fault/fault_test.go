package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindOf(t *testing.T) {
	tests := []struct {
		err  error
		want Kind
	}{
		{errors.New("plain"), KindSystem},
		{Jobf("bad variable %s", "X"), KindJob},
		{fmt.Errorf("prepare: %w", Jobf("bad")), KindJob},
		{System(errors.New("engine down")), KindSystem},
		// the outermost mark wins: a job fault reported by the machinery
		// as its own failure is the machinery's
		{System(Jobf("inner")), KindSystem},
		{Job(System(errors.New("inner"))), KindJob},
	}
	for _, tt := range tests {
		if got := KindOf(tt.err); got != tt.want {
			t.Errorf("KindOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if Job(nil) != nil || System(nil) != nil {
		t.Error("marking nil must stay nil")
	}
	inner := errors.New("inner")
	if !errors.Is(Job(inner), inner) {
		t.Error("a marked error must unwrap to its cause")
	}
}
