package conf

// suggest returns the candidate closest to word, or "" if none is close
// enough to be a plausible misspelling. Closeness is the optimal string
// alignment distance (edits, with adjacent transpositions counting once)
// after treating "_" as "-", because min_interval for min-interval is the
// commonest slip.
func suggest(word string, candidates []string) string {
	w := normalizeKey(word)
	best, bestD := "", -1
	for _, c := range candidates {
		d := osaDistance(w, normalizeKey(c))
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(word) <= 3 {
		limit = 1
	}
	if bestD < 0 || bestD > limit || bestD >= len(word) {
		return ""
	}
	return best
}

// didYouMean formats suggest's answer for appending to a message.
func didYouMean(word string, candidates []string) string {
	if s := suggest(word, candidates); s != "" {
		return "; did you mean \"" + s + "\"?"
	}
	return ""
}

func normalizeKey(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c == '_':
			b[i] = '-'
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func osaDistance(a, b string) int {
	// Three rolling rows suffice for the transposition lookback.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
