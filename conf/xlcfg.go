package conf

import (
	"fmt"
	"regexp"
	"strings"
)

// Op is the operator of a setting.
type Op int

const (
	// Assign is "KEY = VALUE": the value replaces any earlier one.
	Assign Op = iota
	// Append is "KEY += VALUE": the value is concatenated to the effective
	// value of the last earlier setting of KEY (string to string, list to
	// list), or used as is if there is none.
	Append
)

// String returns the operator as written.
func (o Op) String() string {
	if o == Append {
		return "+="
	}
	return "="
}

// Kind says whether a Value is a string or a list.
type Kind int

const (
	// KindString is a quoted string or a number; xl does not tell them apart.
	KindString Kind = iota
	// KindList is a bracketed list of values, possibly nested.
	KindList
)

// Value is one value of an xl.cfg file as xl sees it: a string (quoted or a
// bare number) or a list.
type Value struct {
	// Kind says which of Str and List is meaningful.
	Kind Kind
	// Str is the dequoted string, or a number's text, for KindString.
	Str string
	// Number records that Str was written as a bare number, so that
	// formatting reproduces it; xl treats it as the same string.
	Number bool
	// List holds the elements of a KindList value.
	List []*Value
	// Pos is the position of the value's first byte: its opening quote,
	// first digit or "[".
	Pos Pos

	// cols holds the source position of each byte of Str, so that a
	// problem inside a kemari spec can be placed on its exact column even
	// after escapes and "+=" concatenation.
	cols []lc
}

// PosAt returns the source position of byte i of a string value. Past the
// end of Str it returns the position just after the last byte.
func (v *Value) PosAt(i int) Pos {
	if v.Kind != KindString || len(v.cols) == 0 {
		return v.Pos
	}
	if i < 0 {
		i = 0
	}
	if i >= len(v.cols) {
		last := v.cols[len(v.cols)-1]
		return Pos{File: v.Pos.File, Line: int(last.line), Col: int(last.col) + 1}
	}
	return Pos{File: v.Pos.File, Line: int(v.cols[i].line), Col: int(v.cols[i].col)}
}

// Strings returns the string elements of a list, or the string itself as a
// one-element slice. Nested lists are skipped, as xl's
// xlu_cfg_get_listitem skips them.
func (v *Value) Strings() []string {
	if v == nil {
		return nil
	}
	if v.Kind == KindString {
		return []string{v.Str}
	}
	out := make([]string, 0, len(v.List))
	for _, e := range v.List {
		if e.Kind == KindString {
			out = append(out, e.Str)
		}
	}
	return out
}

// Statement is one "KEY = VALUE" or "KEY += VALUE" statement.
type Statement struct {
	Key    string // the key, e.g. "memory"
	KeyPos Pos    // position of the key's first byte
	Op     Op     // Assign or Append
	// Value is the value as written in this statement.
	Value *Value

	eff *Value
}

// Effective returns the value this statement leaves KEY with: Value for
// Assign, the concatenation for Append.
func (s *Statement) Effective() *Value {
	if s.eff == nil {
		return s.Value
	}
	return s.eff
}

// File is a parsed xl.cfg file. It keeps every statement, including keys
// that xl-kemari does not use, in file order.
type File struct {
	// Name is the file name used in positions.
	Name string
	// Statements lists the statements in the order they appear.
	Statements []*Statement
}

// Lookup returns the last setting of key, which is the one that decides its
// value (as in xl, a later "KEY = ..." overrides an earlier one), or nil.
func (f *File) Lookup(key string) *Statement {
	if f == nil {
		return nil
	}
	for i := len(f.Statements) - 1; i >= 0; i-- {
		if f.Statements[i].Key == key {
			return f.Statements[i]
		}
	}
	return nil
}

// Get returns the effective value of key, or nil if it is not set.
func (f *File) Get(key string) *Value {
	if s := f.Lookup(key); s != nil {
		return s.Effective()
	}
	return nil
}

// Keys returns the distinct keys in order of first appearance.
func (f *File) Keys() []string {
	seen := map[string]bool{}
	var keys []string
	for _, s := range f.Statements {
		if !seen[s.Key] {
			seen[s.Key] = true
			keys = append(keys, s.Key)
		}
	}
	return keys
}

// ParseXLCfg parses src as an xl.cfg file (xl.cfg(5)) named name.
//
// It accepts exactly the files that xl's parser (libxlutil) accepts and gives
// the same values. On failure the error joins one *PosError (wrapping
// ErrSyntax) per bad statement, and the returned File holds only the
// statements that parsed: it is meant for further diagnostics, never to be
// applied.
func ParseXLCfg(name string, src []byte) (*File, error) {
	p := &parser{lx: newLexer(name, src), f: &File{Name: name}}
	p.advance()
	p.parseFile()
	return p.f, p.errs.err()
}

type parser struct {
	lx      *lexer
	tok     token
	f       *File
	errs    errorList
	errLine int // last line with a reported error: one report per line
}

func (p *parser) advance() { p.tok = p.lx.next() }

func (p *parser) report(pos Pos, format string, args ...any) {
	if pos.Line == p.errLine {
		return
	}
	p.errLine = pos.Line
	p.errs.add(pos, ErrSyntax, format, args...)
}

// unexpected reports the current token, saying what was expected instead.
func (p *parser) unexpected(expected string) {
	t := p.tok
	if t.kind == tokError {
		p.report(t.errPos, "%s", t.msg)
		return
	}
	p.report(t.pos, "unexpected %s, expected %s", describe(t), expected)
}

func describe(t token) string {
	switch t.kind {
	case tokIdent:
		return fmt.Sprintf("key %q", t.text)
	case tokNumber:
		return fmt.Sprintf("number %s", t.text)
	case tokString:
		s := t.text
		if len(s) > 20 {
			s = s[:17] + "..."
		}
		return fmt.Sprintf("string %q", s)
	}
	return t.kind.String()
}

// recover skips to the start of the next line that can begin a statement.
// Lines in between (such as the rest of a broken multi-line list) are
// skipped without further syntax errors, as bison's error recovery in xl
// does; bad characters on them are still reported.
func (p *parser) recover() {
	for {
		for p.tok.kind != tokNewline && p.tok.kind != tokEOF {
			if p.tok.kind == tokError {
				p.report(p.tok.errPos, "%s", p.tok.msg)
			}
			p.advance()
		}
		if p.tok.kind == tokEOF {
			return
		}
		p.advance()
		switch p.tok.kind {
		case tokIdent, tokNewline, tokSemi, tokEOF:
			return
		}
	}
}

func (p *parser) parseFile() {
	for {
		switch p.tok.kind {
		case tokEOF:
			return
		case tokNewline, tokSemi:
			p.advance()
		case tokIdent:
			if !p.assignment() {
				p.recover()
				continue
			}
			switch p.tok.kind {
			case tokNewline, tokSemi:
				p.advance()
			case tokEOF:
				return
			default:
				p.unexpected(`end of line or ";" after the value`)
				p.recover()
			}
		default:
			p.unexpected("a key (lower case letters, digits, '.' and '_')")
			p.recover()
		}
	}
}

// assignment parses KEY (=|+=) VALUE and stores it.
func (p *parser) assignment() bool {
	key := p.tok
	p.advance()
	var op Op
	switch p.tok.kind {
	case tokAssign:
		op = Assign
	case tokAppend:
		op = Append
	default:
		p.unexpected(fmt.Sprintf(`"=" or "+=" after key %q`, key.text))
		return false
	}
	p.advance()
	v, ok := p.value()
	if !ok {
		return false
	}
	s := &Statement{Key: key.text, KeyPos: key.pos, Op: op, Value: v}
	if op == Append {
		if prev := p.f.Lookup(key.text); prev != nil {
			pv := prev.Effective()
			if pv.Kind != v.Kind {
				p.report(v.Pos, "can't add a %s to a %s: %q was set to a %s at %d:%d",
					kindName(v.Kind), kindName(pv.Kind), key.text, kindName(pv.Kind), prev.KeyPos.Line, prev.KeyPos.Col)
				return true
			}
			s.eff = concat(pv, v)
		}
	}
	p.f.Statements = append(p.f.Statements, s)
	return true
}

func kindName(k Kind) string {
	if k == KindList {
		return "list"
	}
	return "string"
}

// concat joins a and b of the same kind into a new value positioned at a.
func concat(a, b *Value) *Value {
	if a.Kind == KindString {
		cols := make([]lc, 0, len(a.cols)+len(b.cols))
		cols = append(append(cols, a.cols...), b.cols...)
		return &Value{Kind: KindString, Str: a.Str + b.Str, Pos: a.Pos, cols: cols}
	}
	list := make([]*Value, 0, len(a.List)+len(b.List))
	list = append(append(list, a.List...), b.List...)
	return &Value{Kind: KindList, List: list, Pos: a.Pos}
}

func (p *parser) skipNewlines() {
	for p.tok.kind == tokNewline {
		p.advance()
	}
}

// value parses a string, a number or a list; lists may span lines, may
// nest, and may end with a comma, as in xl's grammar (libxlu_cfg_y.y).
func (p *parser) value() (*Value, bool) { return p.valueIn(nil) }

// valueIn parses a value inside list, or at the top level if list is nil.
func (p *parser) valueIn(in *Value) (*Value, bool) {
	switch p.tok.kind {
	case tokString:
		v := &Value{Kind: KindString, Str: p.tok.text, Pos: p.tok.pos, cols: p.tok.cols}
		p.advance()
		return v, true
	case tokNumber:
		t := p.tok
		cols := make([]lc, len(t.text))
		for i := range cols {
			cols[i] = lc{int32(t.pos.Line), int32(t.pos.Col + i)}
		}
		p.advance()
		return &Value{Kind: KindString, Str: t.text, Number: true, Pos: t.pos, cols: cols}, true
	case tokLBrack:
		list := &Value{Kind: KindList, Pos: p.tok.pos, List: []*Value{}}
		p.advance()
		p.skipNewlines()
		if p.tok.kind == tokRBrack {
			p.advance()
			return list, true
		}
		for {
			v, ok := p.valueIn(list)
			if !ok {
				return nil, false
			}
			list.List = append(list.List, v)
			p.skipNewlines()
			switch p.tok.kind {
			case tokRBrack:
				p.advance()
				return list, true
			case tokComma:
				p.advance()
				p.skipNewlines()
				if p.tok.kind == tokRBrack {
					p.advance()
					return list, true
				}
			default:
				p.unexpected(`"," or "]" in the list opened at ` + fmt.Sprintf("%d:%d", list.Pos.Line, list.Pos.Col))
				return nil, false
			}
		}
	}
	if in != nil {
		p.unexpected(fmt.Sprintf(`a value or "]" to close the list opened at %d:%d`, in.Pos.Line, in.Pos.Col))
	} else {
		p.unexpected(`a value: a quoted string, a number or a [list]`)
	}
	return nil, false
}

// numberRE is xl's NUMBER token.
var numberRE = regexp.MustCompile(`^[0-9][0-9a-fx]*$`)

// Format writes f back as xl.cfg text, one statement per line, that parses
// to the same settings. Comments and layout are not kept.
func (f *File) Format() []byte {
	var b strings.Builder
	for _, s := range f.Statements {
		b.WriteString(s.Key)
		b.WriteString(" ")
		b.WriteString(s.Op.String())
		b.WriteString(" ")
		formatValue(&b, s.Value, 0)
		b.WriteString("\n")
	}
	return []byte(b.String())
}

// String returns v in xl.cfg syntax.
func (v *Value) String() string {
	var b strings.Builder
	formatValue(&b, v, 0)
	return b.String()
}

func formatValue(b *strings.Builder, v *Value, depth int) {
	if v.Kind == KindString {
		if v.Number && numberRE.MatchString(v.Str) {
			b.WriteString(v.Str)
			return
		}
		b.WriteString(Quote(v.Str))
		return
	}
	if len(v.List) == 0 {
		b.WriteString("[]")
		return
	}
	// Lists of one short item stay on one line; longer ones get one item
	// per line with a trailing comma, the layout of xl's own examples.
	if len(v.List) == 1 && v.List[0].Kind == KindString && len(v.List[0].Str) < 40 {
		b.WriteString("[ ")
		formatValue(b, v.List[0], depth+1)
		b.WriteString(" ]")
		return
	}
	indent := strings.Repeat("    ", depth+1)
	b.WriteString("[\n")
	for _, e := range v.List {
		b.WriteString(indent)
		formatValue(b, e, depth+1)
		b.WriteString(",\n")
	}
	b.WriteString(strings.Repeat("    ", depth))
	b.WriteString("]")
}

// Quote returns s as an xl.cfg string literal that xl reads back as s. It
// uses double quotes unless s contains a double quote and no single quote.
// s must not contain a NUL byte, which no xl.cfg string can hold.
func Quote(s string) string {
	q := byte('"')
	if strings.IndexByte(s, '"') >= 0 && strings.IndexByte(s, '\'') < 0 {
		q = '\''
	}
	var b strings.Builder
	b.WriteByte(q)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case q, '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\v':
			b.WriteString(`\v`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte(q)
	return b.String()
}
