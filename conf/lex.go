package conf

import (
	"fmt"
	"strings"
)

// tokKind is a token of the xl.cfg grammar. The set and the character classes
// follow libxlutil's flex scanner (tools/libs/util/libxlu_cfg_l.l), so that
// a file is split into the same tokens xl sees.
type tokKind int

const (
	tokEOF     tokKind = iota
	tokIdent           // [a-z][._0-9a-z]*
	tokNumber          // [0-9][0-9a-fx]*, kept as text, as xl does
	tokString          // '...' or "..." on one line, dequoted
	tokNewline         // "\n", or a comment running to "\n"
	tokComma           // ,
	tokLBrack          // [
	tokRBrack          // ]
	tokAssign          // =
	tokAppend          // +=
	tokSemi            // ;
	tokError           // a character xl's scanner rejects, or a bad escape
)

func (k tokKind) String() string {
	switch k {
	case tokEOF:
		return "end of file"
	case tokIdent:
		return "key"
	case tokNumber:
		return "number"
	case tokString:
		return "string"
	case tokNewline:
		return "end of line"
	case tokComma:
		return `","`
	case tokLBrack:
		return `"["`
	case tokRBrack:
		return `"]"`
	case tokAssign:
		return `"="`
	case tokAppend:
		return `"+="`
	case tokSemi:
		return `";"`
	}
	return "invalid text"
}

// lc is a line and column pair, the compact form of Pos used per byte of a
// string so that problems inside a kemari spec can be placed exactly.
type lc struct{ line, col int32 }

type token struct {
	kind tokKind
	text string // identifier, number, or dequoted string
	pos  Pos
	cols []lc   // tokString: source position of each byte of text
	msg  string // tokError: what is wrong
	// errPos is where a tokError's problem is, e.g. the backslash of a bad
	// escape; pos stays at the start of the token.
	errPos Pos
}

type lexer struct {
	file string
	src  []byte
	off  int
	line int
	col  int // column of src[off]
}

func newLexer(file string, src []byte) *lexer {
	return &lexer{file: file, src: src, line: 1, col: 1}
}

func (lx *lexer) pos() Pos { return Pos{File: lx.file, Line: lx.line, Col: lx.col} }

// advance moves past n bytes that contain no newline.
func (lx *lexer) advance(n int) {
	lx.off += n
	lx.col += n
}

func (lx *lexer) newline() {
	lx.off++
	lx.line++
	lx.col = 1
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (lx *lexer) next() token {
	// Only blank and tab are white space to xl; "\r" is an error, so a file
	// with DOS line endings is rejected by xl and by us alike.
	for lx.off < len(lx.src) && (lx.src[lx.off] == ' ' || lx.src[lx.off] == '\t') {
		lx.advance(1)
	}
	start := lx.pos()
	if lx.off >= len(lx.src) {
		return token{kind: tokEOF, pos: start}
	}
	c := lx.src[lx.off]
	switch {
	case isLower(c):
		n := 1
		for lx.off+n < len(lx.src) {
			d := lx.src[lx.off+n]
			if !isLower(d) && !isDigit(d) && d != '.' && d != '_' {
				break
			}
			n++
		}
		t := token{kind: tokIdent, text: string(lx.src[lx.off : lx.off+n]), pos: start}
		lx.advance(n)
		return t
	case isDigit(c):
		n := 1
		for lx.off+n < len(lx.src) {
			d := lx.src[lx.off+n]
			if !isDigit(d) && !('a' <= d && d <= 'f') && d != 'x' {
				break
			}
			n++
		}
		t := token{kind: tokNumber, text: string(lx.src[lx.off : lx.off+n]), pos: start}
		lx.advance(n)
		return t
	case c == '\n':
		lx.newline()
		return token{kind: tokNewline, pos: start}
	case c == '#':
		// A comment is a line end only if a newline closes it: xl's scanner
		// has no rule for "#" at the end of a file without one.
		for i := lx.off; i < len(lx.src); i++ {
			if lx.src[i] == '\n' {
				lx.advance(i - lx.off)
				lx.newline()
				return token{kind: tokNewline, pos: start}
			}
		}
		return lx.lexError(start, "comment at end of file has no newline; xl requires one")
	case c == ',':
		lx.advance(1)
		return token{kind: tokComma, pos: start}
	case c == '[':
		lx.advance(1)
		return token{kind: tokLBrack, pos: start}
	case c == ']':
		lx.advance(1)
		return token{kind: tokRBrack, pos: start}
	case c == '=':
		lx.advance(1)
		return token{kind: tokAssign, pos: start}
	case c == ';':
		lx.advance(1)
		return token{kind: tokSemi, pos: start}
	case c == '+' && lx.off+1 < len(lx.src) && lx.src[lx.off+1] == '=':
		lx.advance(2)
		return token{kind: tokAppend, pos: start}
	case c == '\'' || c == '"':
		if t, ok := lx.quoted(c, start); ok {
			return t
		}
		return lx.lexError(start, "unterminated string: a string must end on the line where it starts")
	case 'A' <= c && c <= 'Z':
		return lx.lexError(start, fmt.Sprintf("unexpected character %q%s", c, lx.upperHint()))
	case c == '\r':
		return lx.lexError(start, `unexpected carriage return: the file has DOS (CRLF) line endings, which xl rejects`)
	case c == 0:
		return lx.lexError(start, "unexpected NUL byte")
	case strings.IndexByte("+-.():*%{}", c) >= 0:
		return lx.lexError(start, fmt.Sprintf("unexpected character %q: xl.cfg is not Python; quote the value (\"...\")", c))
	}
	return lx.lexError(start, fmt.Sprintf("unexpected character %q", rune(c)))
}

// upperHint explains an upper-case letter by what precedes it.
func (lx *lexer) upperHint() string {
	i := lx.off - 1
	if i >= 0 && (isDigit(lx.src[i]) || isLower(lx.src[i])) {
		return ": xl numbers take no unit suffix (memory is in MiB)"
	}
	for ; i >= 0 && (lx.src[i] == ' ' || lx.src[i] == '\t'); i-- {
	}
	if i < 0 || lx.src[i] == '\n' || lx.src[i] == ';' {
		return ": keys are lower case"
	}
	return ""
}

// lexError skips what xl's scanner skips after a bad character (up to the
// next blank, tab or newline) and returns an error token for it.
func (lx *lexer) lexError(start Pos, msg string) token {
	// xl's scanner reports a bad byte only when it has read one more byte
	// after it; a single bad byte at the very end of the input meets end of
	// file first and is dropped without a word. Do the same, so that
	// verdicts agree, except for NUL, which xl cannot take in a string.
	if lx.off+1 == len(lx.src) && lx.src[lx.off] != 0 {
		lx.advance(1)
		return token{kind: tokEOF, pos: lx.pos()}
	}
	n := 1
	for lx.off+n < len(lx.src) {
		d := lx.src[lx.off+n]
		if d == ' ' || d == '\t' || d == '\n' {
			break
		}
		n++
	}
	lx.advance(n)
	return token{kind: tokError, pos: start, errPos: start, msg: msg}
}

// quoted scans a string in quote q starting at lx.off. It reports ok=false,
// consuming nothing, if the string does not end on its line, mirroring the
// scanner rule that a quoted string is `q([^q\\\n]|\\.)*q`.
func (lx *lexer) quoted(q byte, start Pos) (token, bool) {
	i := lx.off + 1
	for {
		if i >= len(lx.src) || lx.src[i] == '\n' {
			return token{}, false
		}
		c := lx.src[i]
		if c == q {
			break
		}
		if c == '\\' {
			if i+1 >= len(lx.src) || lx.src[i+1] == '\n' {
				return token{}, false
			}
			i++
		}
		i++
	}
	raw := lx.src[lx.off+1 : i] // between the quotes
	t := token{kind: tokString, pos: start}
	text, cols, errOff, msg := dequote(raw, start.Col+1)
	line := int32(start.Line)
	t.text = text
	t.cols = make([]lc, len(cols))
	for k, c := range cols {
		t.cols[k] = lc{line, int32(c)}
	}
	if msg != "" {
		t.kind = tokError
		t.msg = msg
		t.errPos = Pos{File: lx.file, Line: start.Line, Col: start.Col + 1 + errOff}
	}
	lx.advance(i + 1 - lx.off)
	return t, true
}

// dequote decodes the text between the quotes of an xl.cfg string, returning
// the decoded bytes and the source column of each. On a bad escape it
// returns the offset of the backslash within raw and a message.
//
// The escapes are xl's (libxlu_cfg.c, xlu__cfgl_dequote), quirks included, so
// that the values agree with xl's:
//   - \" \' \\ and the C escapes \a \b \f \n \r \t \v stand for themselves;
//   - \x is always rejected, because xl's decoder skips the first hex digit and
//     then demands more than two;
//   - a backslash and an octal digit 0-7 are deleted together with the number
//     that follows, read as by C's strtoul(next three bytes, base 10), which
//     must span at least two bytes; nothing is inserted. xl has always done
//     this; the man page tells users not to rely on it.
func dequote(raw []byte, col0 int) (text string, cols []int, errOff int, msg string) {
	out := make([]byte, 0, len(raw))
	cols = make([]int, 0, len(raw))
	for p := 0; p < len(raw); {
		c := raw[p]
		if c != '\\' {
			out = append(out, c)
			cols = append(cols, col0+p)
			p++
			continue
		}
		bs := p
		nc := raw[p+1] // the scanner guarantees a byte after a backslash
		p += 2
		var r byte
		switch nc {
		case '"', '\'', '\\':
			r = nc
		case 'a':
			r = '\a'
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'v':
			r = '\v'
		case 'x':
			return string(out), cols, bs, `"\x" escapes are rejected by xl; write the character itself`
		case '0', '1', '2', '3', '4', '5', '6', '7':
			// xl copies up to three bytes that may run past the closing
			// quote into the terminating NUL; the quote is never a digit,
			// so looking at raw plus the quote gives the same answer.
			win := raw[p:]
			if len(win) > 3 {
				win = win[:3]
			}
			n := strtoulSpan(win)
			if n <= 1 {
				return string(out), cols, bs, fmt.Sprintf("invalid escape %q: xl rejects a backslash and digit not followed by two more digits", raw[bs:min(bs+2, len(raw))])
			}
			p += n
			continue
		default:
			return string(out), cols, bs, fmt.Sprintf(`invalid escape %q in string; the valid ones are \" \' \\ \a \b \f \n \r \t \v`, raw[bs:bs+2])
		}
		out = append(out, r)
		cols = append(cols, col0+bs)
	}
	return string(out), cols, 0, ""
}

// strtoulSpan returns how many bytes of b C's strtoul(b, &end, 10) consumes:
// leading white space and a sign count only if digits follow.
func strtoulSpan(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == ' ' || ('\t' <= b[i] && b[i] <= '\r')) {
		i++
	}
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		i++
	}
	j := i
	for j < len(b) && isDigit(b[j]) {
		j++
	}
	if j == i {
		return 0
	}
	return j
}
