package conf

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// Sentinel errors. Every *PosError wraps exactly one of them, so callers can
// classify a problem with errors.Is without parsing its text.
var (
	// ErrSyntax marks text that xl's own parser would reject too.
	ErrSyntax = errors.New("conf: syntax error")
	// ErrUnknownKey marks a key that xl-kemari does not know.
	ErrUnknownKey = errors.New("conf: unknown key")
	// ErrInvalidValue marks a value of the wrong type, form or range.
	ErrInvalidValue = errors.New("conf: invalid value")
	// ErrConflict marks settings that are valid alone but not together.
	ErrConflict = errors.New("conf: conflicting settings")
	// ErrMissing marks a required setting that is absent.
	ErrMissing = errors.New("conf: missing setting")
	// ErrRead marks a file that could not be read at all.
	ErrRead = errors.New("conf: cannot read file")
)

// Pos is a position in a configuration source. Line and Col count from 1;
// Col counts bytes, as compilers do, so a tab is one column.
type Pos struct {
	File string // file name as given, or "<command line>", "<spec>"
	Line int    // 1-based; 0 when only the file is known
	Col  int    // 1-based byte column
}

// String formats p as FILE:LINE:COLUMN, the prefix of every error, or as
// FILE alone when no line is known (a file that cannot be read).
func (p Pos) String() string {
	file := p.File
	if file == "" {
		file = "<input>"
	}
	if p.Line <= 0 {
		return file
	}
	return fmt.Sprintf("%s:%d:%d", file, p.Line, p.Col)
}

// readError is the problem of a configuration file that cannot be read:
// what sort of file it is, and that it does not exist or why it cannot be
// read (without repeating the path, which the position names).
func readError(path, what string, err error) *PosError {
	msg := fmt.Sprintf("cannot read %s: %v", what, err)
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		msg = fmt.Sprintf("the %s does not exist", what)
	case errors.As(err, &pe):
		msg = fmt.Sprintf("cannot read %s: %v", what, pe.Err)
	}
	return &PosError{Pos: Pos{File: path}, Msg: msg, Err: ErrRead}
}

// IsValid reports whether p names a real place.
func (p Pos) IsValid() bool { return p.Line > 0 }

// before orders positions by file, line and column.
func (p Pos) before(q Pos) bool {
	if p.File != q.File {
		return p.File < q.File
	}
	if p.Line != q.Line {
		return p.Line < q.Line
	}
	return p.Col < q.Col
}

// PosError is one problem at one place. Its text is "FILE:LINE:COLUMN: Msg",
// and it unwraps to the sentinel Err.
type PosError struct {
	Pos Pos    // where the problem is
	Msg string // what is wrong and what was expected, on one line
	Err error  // the sentinel: ErrSyntax, ErrUnknownKey, ...
}

// Error implements error.
func (e *PosError) Error() string { return e.Pos.String() + ": " + e.Msg }

// Unwrap returns the sentinel that classifies the problem.
func (e *PosError) Unwrap() error { return e.Err }

// errorList collects problems so that all of them can be reported at once.
type errorList []*PosError

func (l *errorList) add(pos Pos, sentinel error, format string, args ...any) {
	*l = append(*l, &PosError{Pos: pos, Msg: fmt.Sprintf(format, args...), Err: sentinel})
}

// err returns the problems sorted by position and joined, or nil.
func (l errorList) err() error {
	if len(l) == 0 {
		return nil
	}
	s := slices.Clone(l)
	slices.SortStableFunc(s, func(a, b *PosError) int {
		switch {
		case a.Pos.before(b.Pos):
			return -1
		case b.Pos.before(a.Pos):
			return 1
		}
		return 0
	})
	errs := make([]error, len(s))
	for i, e := range s {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// Errors flattens err into its *PosError parts, in order; errors that are not
// *PosError (which conf never returns) are wrapped at an invalid position so
// that no problem is dropped.
func Errors(err error) []*PosError {
	if err == nil {
		return nil
	}
	var out []*PosError
	var walk func(error)
	walk = func(e error) {
		if pe, ok := e.(*PosError); ok {
			out = append(out, pe)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		out = append(out, &PosError{Msg: e.Error(), Err: e})
	}
	walk(err)
	return out
}

// quoteList formats choices as `"a", "b" or "c"` for messages.
func quoteList(choices []string) string {
	q := make([]string, len(choices))
	for i, c := range choices {
		q[i] = fmt.Sprintf("%q", c)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
