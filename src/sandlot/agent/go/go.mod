module sandlot/agent

go 1.19
