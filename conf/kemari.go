package conf

import "strings"

// KemariKey is the xl.cfg key of xl-kemari's entries. xl itself ignores keys
// it does not know, so the entries can sit in the domain's own xl.cfg.
const KemariKey = "kemari"

// specItem is one key=value of a kemari entry.
type specItem struct {
	field  Field
	value  string
	keyOff int // byte offset of the key in the entry text
	valOff int // byte offset of the value
}

// parseSpec splits one kemari entry into items, reporting every problem with
// the position posAt gives for a byte offset of text. Items with unknown keys
// or duplicate keys are dropped; values are not checked here.
func parseSpec(text string, posAt func(int) Pos, errs *errorList) []specItem {
	var items []specItem
	first := map[Field]int{}
	off := 0
	for _, part := range strings.Split(text, ",") {
		start := off
		off += len(part) + 1
		lead := len(part) - len(strings.TrimLeft(part, " \t"))
		item := strings.TrimRight(part[lead:], " \t")
		if item == "" {
			// Tolerate ",," and a trailing comma, as in "a=1,b=2,".
			continue
		}
		itemOff := start + lead
		eq := strings.IndexByte(item, '=')
		if eq < 0 {
			hint := ""
			if _, ok := FieldByName(item); ok {
				hint = "; " + item + " needs a value"
			} else if strings.Count(text, "=") == 0 && len(items) == 0 && !strings.ContainsAny(item, " \t") {
				hint = "; to name the standby write standby=" + item
			}
			errs.add(posAt(itemOff), ErrInvalidValue, "expected key=value in kemari entry, found %q%s", item, hint)
			continue
		}
		key := strings.TrimRight(item[:eq], " \t")
		rest := item[eq+1:]
		vlead := len(rest) - len(strings.TrimLeft(rest, " \t"))
		value := rest[vlead:]
		valOff := itemOff + eq + 1 + vlead
		f, ok := FieldByName(key)
		if !ok {
			errs.add(posAt(itemOff), ErrUnknownKey, "unknown kemari key %q%s", key, didYouMean(key, fieldNames[:]))
			continue
		}
		if prev, dup := first[f]; dup {
			p := posAt(prev)
			errs.add(posAt(itemOff), ErrConflict, "%s is set twice in this entry (first at column %d)", f, p.Col)
			continue
		}
		first[f] = itemOff
		items = append(items, specItem{field: f, value: value, keyOff: itemOff, valOff: valOff})
	}
	return items
}

// applySpec parses one kemari entry onto p, recording origin src at each
// value's position, and reports every problem.
func applySpec(p *Protection, text string, posAt func(int) Pos, src Source, errs *errorList) {
	for _, it := range parseSpec(text, posAt, errs) {
		vpos := posAt(it.valOff)
		if e := p.setText(it.field, it.value, Origin{Source: src, Pos: vpos}); e != nil {
			errs.add(posAt(it.valOff+e.Off), ErrInvalidValue, "%s", e.Msg)
		}
	}
}

// ParseKemariSpec parses spec, one kemari entry such as
// "standby=host2,interval=50ms,netbuf=plug", applies it on top of base and
// returns the result, with SourceDomain origins whose positions are columns
// of spec on line 1 of "<spec>".
//
// Every problem is reported, joined, each a *PosError. Only the syntax and
// each value are checked; conflicts between fields are the business of
// Validate, once all layers have been merged.
func ParseKemariSpec(spec string, base Protection) (Protection, error) {
	var errs errorList
	posAt := func(i int) Pos { return Pos{File: "<spec>", Line: 1, Col: i + 1} }
	applySpec(&base, spec, posAt, SourceDomain, &errs)
	return base, errs.err()
}

// Overrides are protection settings given on the command line; they win
// over every file.
type Overrides struct {
	// Args holds one kemari entry per command-line option, e.g.
	// "interval=50ms" or "netbuf=plug,unsafe=0", in the order given. Errors
	// in Args[i] are reported at "<command line>:i+1:COLUMN".
	Args []string
}

// Set adds key=value.
func (o *Overrides) Set(key, value string) { o.Args = append(o.Args, key+"="+value) }

// CommandLineFile is the file name of positions on the command line.
const CommandLineFile = "<command line>"

// parse returns the overriding values, which fields they set, and the
// problems found.
func (o Overrides) parse(errs *errorList) (Protection, [NumFields]bool) {
	p := Defaults()
	var set [NumFields]bool
	for i, arg := range o.Args {
		posAt := func(j int) Pos { return Pos{File: CommandLineFile, Line: i + 1, Col: j + 1} }
		before := p.Origins
		applySpec(&p, arg, posAt, SourceCommandLine, errs)
		for f := range before {
			if p.Origins[f] != before[f] {
				set[f] = true
			}
		}
	}
	return p, set
}
