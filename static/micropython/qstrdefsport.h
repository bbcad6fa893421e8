// qstrs the port uses that py/ does not already define.
