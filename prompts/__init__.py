"""oripid.prompts"""
