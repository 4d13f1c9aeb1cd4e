package conf

import "strings"

// tomlLocator finds where a key and its value sit in a TOML file.
// BurntSushi/toml keeps key positions private, yet every problem needs a
// line and column, so this scans the simple shape kemari.toml has: table
// headers, and "key = value" lines with bare, quoted or dotted keys.
// Multi-line strings and arrays are stepped over. A key it cannot find is
// placed at the start of the file.
type tomlLocator struct {
	file   string
	keys   map[string]Pos
	values map[string]Pos
}

func locateTOML(file string, src []byte) *tomlLocator {
	l := &tomlLocator{file: file, keys: map[string]Pos{}, values: map[string]Pos{}}
	lines := strings.Split(string(src), "\n")
	table := ""
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		indent := len(line) - len(strings.TrimLeft(line, " \t"))
		rest := line[indent:]
		switch {
		case rest == "" || rest[0] == '#':
			continue
		case strings.HasPrefix(rest, "["):
			name := strings.Trim(stripComment(rest), "[] \t")
			table = joinKey(splitDotted(name))
			if _, ok := l.keys[table]; !ok {
				l.keys[table] = Pos{File: file, Line: i + 1, Col: indent + 2 - boolInt(strings.HasPrefix(rest, "[["))}
			}
			continue
		}
		eq := keyEnd(rest)
		if eq < 0 {
			continue
		}
		parts := splitDotted(strings.TrimSpace(rest[:eq]))
		full := joinKey(parts)
		if table != "" {
			full = table + "." + full
		}
		vcol := eq + 1
		for vcol < len(rest) && (rest[vcol] == ' ' || rest[vcol] == '\t') {
			vcol++
		}
		if _, ok := l.keys[full]; !ok {
			l.keys[full] = Pos{File: file, Line: i + 1, Col: indent + 1}
			l.values[full] = Pos{File: file, Line: i + 1, Col: indent + vcol + 1}
		}
		// Step over the lines of a multi-line value.
		v := rest[vcol:]
		switch {
		case strings.HasPrefix(v, `"""`) || strings.HasPrefix(v, `'''`):
			delim := v[:3]
			if strings.Count(v, delim) < 2 {
				for i+1 < len(lines) && !strings.Contains(lines[i+1], delim) {
					i++
				}
				i++
			}
		case strings.HasPrefix(v, "["):
			depth := strings.Count(stripComment(v), "[") - strings.Count(stripComment(v), "]")
			for depth > 0 && i+1 < len(lines) {
				i++
				c := stripComment(lines[i])
				depth += strings.Count(c, "[") - strings.Count(c, "]")
			}
		}
	}
	return l
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// keyEnd returns the index of the "=" that ends the key of a line, skipping
// quoted key parts, or -1.
func keyEnd(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"', '\'':
			j := strings.IndexByte(s[i+1:], s[i])
			if j < 0 {
				return -1
			}
			i += j + 1
		case '=':
			return i
		case '#':
			return -1
		}
	}
	return -1
}

// splitDotted splits a TOML key on the dots outside quotes and unquotes the
// parts.
func splitDotted(k string) []string {
	var parts []string
	cur := strings.Builder{}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch c {
		case '"', '\'':
			j := strings.IndexByte(k[i+1:], c)
			if j < 0 {
				cur.WriteString(k[i+1:])
				i = len(k)
				continue
			}
			cur.WriteString(k[i+1 : i+1+j])
			i += j + 1
		case '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case ' ', '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

func joinKey(parts []string) string { return strings.Join(parts, ".") }

// stripComment removes a trailing comment that is outside quotes.
func stripComment(s string) string {
	var q byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q != 0 && c == '\\' && q == '"':
			i++
		case q != 0 && c == q:
			q = 0
		case q == 0 && (c == '"' || c == '\''):
			q = c
		case q == 0 && c == '#':
			return s[:i]
		}
	}
	return s
}

// key returns the position of key (dotted), or of its table, or 1:1.
func (l *tomlLocator) key(k string) Pos {
	for {
		if p, ok := l.keys[k]; ok {
			return p
		}
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			return Pos{File: l.file, Line: 1, Col: 1}
		}
		k = k[:i]
	}
}

// value returns the position of key's value, or key's position.
func (l *tomlLocator) value(k string) Pos {
	if p, ok := l.values[k]; ok {
		return p
	}
	return l.key(k)
}
