package proxy

// maxHold bounds one call's hold in milli-credits: past any balance (2^50 mc
// is over a billion credits), and small enough that balances and sums of
// holds stay exact in Redis's Lua numbers (doubles, exact to 2^53).
const maxHold = 1 << 50

// heldToolUses is how many per-use fees (web searches) a call that declares a
// provider-side tool holds for each prompt. A provider may run more; they are
// charged in full at settle, past the hold (over_hold) like any excess.
const heldToolUses = 10

// mulHold is a × b for non-negative a and b, and whether it is at most
// maxHold (when it is not, the product returned is maxHold).
func mulHold(a, b int64) (int64, bool) {
	if a <= 0 || b <= 0 {
		return 0, true
	}
	if a > maxHold/b {
		return maxHold, false
	}
	return a * b, true
}

// errTooLargeToHold: the worst case of a call exceeds any hold.
func errTooLargeToHold(prompts, choices int64) error {
	return invalid("", "This request could cost more than any balance can cover (%d prompts × %d choices at the model's window and output limit); send fewer prompts or choices, or a lower output limit.",
		prompts, max(choices, 1))
}
