package proxy

// Test helpers shared with the external proxy_test package.

// MembersAt reads a JSON document with an independent strict parser and
// returns the values of every member at path, duplicates included.
var MembersAt = membersAt
